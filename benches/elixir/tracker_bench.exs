# The tracker workload of perf-workload.md on the real Phoenix.Tracker.State (phoenix_pubsub
# 2.2.0), printing `ELIXIR <op> <n> <median> min=<min> max=<max>` lines in the shape of
# `phxsim bench-tracker`, so that the two can run back to back and be compared as ratios.
#
#   elixir -pa PATH/TO/phoenix_pubsub-2.2.0/ebin benches/elixir/tracker_bench.exs [--n 1000,10000,100000] [--runs 5]
#
# (or set PHOENIX_PUBSUB_EBIN and pass no -pa). Times in microseconds, sizes in bytes.

defmodule TrackerBench do
  alias Phoenix.Tracker.State

  @topics 100
  @changes 1000

  # ---- inputs ----------------------------------------------------------------------------

  def topic(i), do: "room:#{rem(i, @topics)}"
  def key(i), do: "user:#{i}"
  # Pid terms without processes (a pid's number field has 15 bits).
  def pid(i), do: :c.pid(0, rem(i, 32768), div(i, 32768))
  def phx_ref, do: Base.url_encode64(:rand.bytes(12))
  def meta(i), do: %{online_at: 1_750_000_000 + i, phx_ref: phx_ref()}

  # An opaque sink, so that the generation loop is not optimised away.
  def keep(x), do: x

  def generation_us(count, first) do
    {us, _} =
      :timer.tc(fn ->
        Enum.each(first..(first + count - 1), fn i -> keep({pid(i), topic(i), key(i), meta(i)}) end)
      end)

    us
  end

  def joins(state, n, flush_every) do
    Enum.reduce(0..(n - 1), state, fn i, s ->
      s = State.join(s, pid(i), topic(i), key(i), meta(i))

      if flush_every != nil and rem(i + 1, flush_every) == 0 do
        flush(s)
      else
        s
      end
    end)
  end

  # What the shard does after broadcasting a heartbeat.
  def flush(state), do: state |> State.reset_delta() |> State.compact()

  def time(fun) do
    t0 = :erlang.monotonic_time(:nanosecond)
    r = fun.()
    {(:erlang.monotonic_time(:nanosecond) - t0) / 1000, r}
  end

  def check(true, _), do: :ok
  def check(false, what), do: raise("check failed: #{what}")

  def table(prefix, run, n), do: :"tracker_bench_#{prefix}_#{n}_#{run}"

  def drop(state) do
    :ets.delete(state.values)
    :ets.delete(state.pids)
  end

  # ---- one run ---------------------------------------------------------------------------

  def run(n, run) do
    :rand.seed(:exsss, {run, 2, 3})
    word = :erlang.system_info(:wordsize)
    gen_n = generation_us(n, 0)

    a = State.new({:a, 1}, table(:a, run, n))
    {t, a} = time(fn -> joins(a, n, nil) end)
    f = %{join_burst_per_op: max(t - gen_n, 0) / n}

    a2 = State.new({:a, 1}, table(:a2, run, n))
    {t, a2} = time(fn -> joins(a2, n, 1000) end)
    f = Map.put(f, :join_flush1000_per_op, max(t - gen_n, 0) / n)
    drop(a2)

    delta_bytes = :erts_debug.flat_size(a.delta) * word
    {t, a} = time(fn -> flush(a) end)
    f = Map.put(f, :flush_after_burst, t)

    state_bytes = (:ets.info(a.values, :memory) + :ets.info(a.pids, :memory)) * word

    f =
      f
      |> Map.put(:mem_state_bytes, state_bytes / n)
      |> Map.put(:mem_pending_delta_bytes, delta_bytes / n)

    # full transfer a -> b
    b = State.new({:b, 1}, table(:b, run, n))
    {b, _, _} = State.replica_up(b, {:a, 1})
    {_, b_clocks} = State.clocks(b)
    {t, extract} = time(fn -> State.extract(a, {:b, 1}, b_clocks) end)
    f = Map.put(f, :transfer_extract, t)
    {t, {b, joined, left}} = time(fn -> State.merge(b, extract) end)
    f = Map.put(f, :transfer_merge, t)
    check(length(joined) == n and left == [], "transfer merge reports n joins")

    msg = {:pub, :transfer_ack, make_ref(), {:a, 1}, extract}
    {enc, dec, bytes} = frame_round(msg)

    f =
      f
      |> Map.put(:transfer_frame_encode, enc)
      |> Map.put(:transfer_frame_decode, dec)
      |> Map.put(:transfer_frame_bytes, bytes / n)

    # 1 000 local changes on a, carried by one heartbeat
    b = flush(b)
    picks = Enum.shuffle(0..(n - 1))
    gen_k = generation_us(@changes, n)

    {t, {a, rest}} =
      time(fn ->
        Enum.reduce(0..(@changes - 1), {a, picks}, fn j, {s, picks} ->
          case rem(j, 4) do
            r when r in [0, 1] ->
              [i | picks] = picks
              {update(s, i), picks}

            2 ->
              [i | picks] = picks
              {State.leave(s, pid(i), topic(i), key(i)), picks}

            3 ->
              i = n + div(j, 4)
              {State.join(s, pid(i), topic(i), key(i), meta(i)), picks}
          end
        end)
      end)

    f = Map.put(f, :k1000_local_changes, max(t - gen_k, 0))

    {_, a_clocks} = State.clocks(a)
    msg = {:pub, :heartbeat, {:a, 1}, a.delta, a_clocks}
    {enc, dec, bytes} = frame_round(msg)

    f =
      f
      |> Map.put(:hb_k1000_frame_encode, enc)
      |> Map.put(:hb_k1000_frame_decode, dec)
      |> Map.put(:hb_k1000_frame_bytes, bytes)

    {t, {b, joined, left}} = time(fn -> State.merge(b, a.delta) end)
    f = Map.put(f, :hb_k1000_merge, t)
    want = div(@changes, 4) * 3
    check(length(joined) == want and length(left) == want, "heartbeat merge reports 750/750")

    {t, a} = time(fn -> flush(a) end)
    f = Map.put(f, :sender_flush_after_k, t)

    # one more update
    b = flush(b)
    [i | _] = rest
    a = update(a, i)
    {t, {b, joined, left}} = time(fn -> State.merge(b, a.delta) end)
    f = Map.put(f, :hb_1update_merge, t)
    check(length(joined) == 1 and length(left) == 1, "one-update merge reports 1/1")
    check(Enum.sort(State.online_list(a)) == Enum.sort(State.online_list(b)), "a and b agree")

    # reads on a
    calls = cond do
      n <= 1_000 -> 2_000
      n <= 10_000 -> 200
      true -> 100
    end

    topics = List.to_tuple(Enum.map(0..(@topics - 1), &"room:#{&1}"))

    {t, _} =
      time(fn ->
        Enum.each(0..(calls - 1), fn c -> keep(State.get_by_topic(a, elem(topics, rem(c, @topics)))) end)
      end)

    f = Map.put(f, :get_by_topic, t / calls)

    calls = cond do
      n <= 1_000 -> 200
      n <= 10_000 -> 20
      true -> 3
    end

    {t, _} =
      time(fn ->
        Enum.each(1..calls, fn _ ->
          l = State.online_list(a)
          check(length(l) == n, "online list has n entries")
        end)
      end)

    f = Map.put(f, :online_list, t / calls)
    drop(a)
    drop(b)
    f
  end

  def update(s, i) do
    {_key, old, _tag} = State.get_by_pid(s, pid(i), topic(i), key(i))
    new = %{online_at: 1_750_000_000 + i, phx_ref: phx_ref(), phx_ref_prev: old.phx_ref}
    State.leave_join(s, pid(i), topic(i), key(i), new)
  end

  def frame_round(msg) do
    {enc, bin} = time(fn -> :erlang.term_to_binary(msg) end)
    {dec, back} = time(fn -> :erlang.binary_to_term(bin) end)
    check(back == msg, "frame round trip")
    {enc, dec, byte_size(bin)}
  end

  @ops ~w(join_burst_per_op join_flush1000_per_op flush_after_burst transfer_extract
          transfer_merge transfer_frame_encode transfer_frame_decode transfer_frame_bytes
          k1000_local_changes hb_k1000_frame_encode hb_k1000_frame_decode hb_k1000_frame_bytes
          hb_k1000_merge sender_flush_after_k hb_1update_merge get_by_topic online_list
          mem_state_bytes mem_pending_delta_bytes)a

  def fmt(x), do: :erlang.float_to_binary(x / 1, decimals: 3)

  def main(argv) do
    {opts, _, _} = OptionParser.parse(argv, strict: [n: :string, runs: :integer])
    ns = (opts[:n] || "1000,10000,100000") |> String.split(",") |> Enum.map(&String.to_integer(String.trim(&1)))
    runs = opts[:runs] || 5
    IO.puts("# elixir tracker_bench: #{runs} measured runs after one warm-up, times in µs, sizes in bytes; OTP #{:erlang.system_info(:otp_release)}")

    for n <- ns do
      samples =
        Enum.map(0..runs, fn r -> run(n, r) end)
        |> tl()

      for op <- @ops do
        xs = samples |> Enum.map(&Map.fetch!(&1, op)) |> Enum.sort()
        len = length(xs)
        median =
          if rem(len, 2) == 1,
            do: Enum.at(xs, div(len, 2)),
            else: (Enum.at(xs, div(len, 2) - 1) + Enum.at(xs, div(len, 2))) / 2

        IO.puts("ELIXIR #{op} #{n} #{fmt(median)} min=#{fmt(hd(xs))} max=#{fmt(List.last(xs))}")
      end
    end
  end
end

case System.get_env("PHOENIX_PUBSUB_EBIN") do
  nil -> :ok
  dir -> Code.prepend_path(dir)
end

unless Code.ensure_loaded?(Phoenix.Tracker.State) do
  IO.puts(:stderr, "tracker_bench: Phoenix.Tracker.State not found; pass -pa PATH/phoenix_pubsub-2.2.0/ebin or set PHOENIX_PUBSUB_EBIN")
  System.halt(2)
end

TrackerBench.main(System.argv())
