# One node of a phxsim crosscheck cluster: a real Phoenix.Tracker (phoenix_pubsub) on a BEAM
# with distributed Erlang, driven line by line on stdin by `phxsim crosscheck`, logging every
# handle_diff and replica event on stdout with its time.
#
# Started as:
#   elixir --name NODE@127.0.0.1 --cookie C --erl "-connect_all false -kernel dist_auto_connect never" \
#          -pa PUBSUB_EBIN node.exs FILTERED(0|1) BP MAX_SILENT DOWN PERMDOWN CLOCK_SAMPLES SIZES POOL
#
# Commands (one per line, arguments hex-encoded UTF-8 so that no key or meta can break a line):
#   clock T0                         times are logged as os_time_ms - T0
#   at WHEN CMD ARGS...              run CMD at os time WHEN (ms) on this node's own timer (at once
#                                    if WHEN has passed, logging how late it is)
#   connect NODE | disconnect NODE   explicit distribution links (nothing connects on its own)
#   block NODE | unblock NODE        drop (or stop dropping) this node's tracker messages to NODE
#   start                            start the tracker (a new replica: a new vsn)
#   crash                            cut every link, kill the tracker and every owner process
#   permdown                         Phoenix.Tracker.graceful_permdown, then cut every link
#   track CLIENT TOPIC KEY META      a new owner process for CLIENT tracks KEY (META: JSON text)
#   untrack CLIENT | update CLIENT META | drop CLIENT (the owner process is killed)
#   list TOPIC | quit
# Every output line that matters starts with "@@ " and holds one JSON object.

defmodule PhxsimCrosscheck.Json do
  @moduledoc "Just enough JSON for the log lines: maps, lists, strings, integers, booleans."
  def encode(v) when is_binary(v), do: [?", escape(v), ?"]
  def encode(v) when is_integer(v), do: Integer.to_string(v)
  def encode(true), do: "true"
  def encode(false), do: "false"
  def encode(nil), do: "null"
  def encode(v) when is_atom(v), do: encode(Atom.to_string(v))
  def encode(v) when is_list(v), do: [?[, Enum.map_intersperse(v, ?,, &encode/1), ?]]

  def encode(%{} = m) do
    pairs = m |> Enum.map(fn {k, v} -> {to_string(k), v} end) |> Enum.sort()
    [?{, Enum.map_intersperse(pairs, ?,, fn {k, v} -> [encode(k), ?:, encode(v)] end), ?}]
  end

  def encode(other), do: encode(inspect(other))

  defp escape(s) do
    for <<c::utf8 <- s>>, into: "" do
      case c do
        ?" -> "\\\""
        ?\\ -> "\\\\"
        c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
        c -> <<c::utf8>>
      end
    end
  end
end

defmodule PhxsimCrosscheck.Log do
  @moduledoc "Log lines with the time since the run's T0, in ms (os clock: shared by all nodes)."
  def set_t0(t0), do: :persistent_term.put({__MODULE__, :t0}, t0)

  def now do
    System.os_time(:millisecond) - :persistent_term.get({__MODULE__, :t0}, 0)
  end

  def emit(fields) do
    line = PhxsimCrosscheck.Json.encode(Map.merge(%{t: now(), node: short(node())}, fields))
    IO.binwrite(:stdio, ["@@ ", line, "\n"])
  end

  def short(node_name), do: node_name |> Atom.to_string() |> String.split("@") |> hd()
end

defmodule PhxsimCrosscheck.Tracker do
  @moduledoc "The tracker under test: logs every handle_diff, one line per diff and topic."
  use Phoenix.Tracker
  alias PhxsimCrosscheck.Log

  def start_link(opts), do: Phoenix.Tracker.start_link(__MODULE__, %{}, opts)

  @impl true
  def init(state), do: {:ok, state}

  @impl true
  def handle_diff(diff, state) do
    for {topic, {joins, leaves}} <- diff do
      Log.emit(%{ev: "diff", topic: topic, joins: entries(joins), leaves: entries(leaves)})
    end

    {:ok, state}
  end

  def entries(list), do: for({key, meta} <- list, do: %{key: key, meta: Map.get(meta, "json", "{}")})
end

defmodule PhxsimCrosscheck.FilteredPG2 do
  @moduledoc """
  Phoenix.PubSub's PG2 adapter with an outbound filter, for one-way cuts: distributed Erlang
  connections carry both directions, so "messages from x to y are lost" is modelled by x not
  sending its PubSub messages to y. Delivery is otherwise PG2's: the same :pg scope and groups,
  the same worker processes (started by PG2's own child_spec), the same message shape.
  """
  @behaviour Phoenix.PubSub.Adapter
  @table :phxsim_blocked_out

  def block(node_name), do: :ets.insert(@table, {node_name})
  def unblock(node_name), do: :ets.delete(@table, node_name)
  def blocked?(node_name), do: :ets.member(@table, node_name)

  def init_table, do: :ets.new(@table, [:named_table, :public, :set])

  @impl true
  def node_name(name), do: Phoenix.PubSub.PG2.node_name(name)

  @impl true
  def child_spec(opts), do: Phoenix.PubSub.PG2.child_spec(opts)

  @impl true
  def broadcast(adapter_name, topic, message, dispatcher) do
    groups = :persistent_term.get(adapter_name)
    group = elem(groups, :erlang.phash2(self(), tuple_size(groups)))

    case :pg.get_members(Phoenix.PubSub, group) do
      {:error, reason} ->
        {:error, reason}

      pids ->
        for pid <- pids, node(pid) != node(), not blocked?(node(pid)) do
          send(pid, {:forward_to_local, topic, message, dispatcher})
        end

        :ok
    end
  end

  @impl true
  def direct_broadcast(adapter_name, node_name, topic, message, dispatcher) do
    if blocked?(node_name) do
      :ok
    else
      Phoenix.PubSub.PG2.direct_broadcast(adapter_name, node_name, topic, message, dispatcher)
    end
  end
end

defmodule PhxsimCrosscheck.Node do
  alias PhxsimCrosscheck.{Log, FilteredPG2}

  @tracker PhxsimCrosscheck.Tracker
  @pubsub PhxsimCrosscheck.PubSub

  def main([filtered, bp, silent, down, permdown, samples, sizes, pool]) do
    # phoenix_pubsub logs delta generations at debug, and a killed shard is an error report:
    # neither belongs in the event log
    Logger.configure(level: :none)
    int = &String.to_integer/1

    opts = [
      name: @tracker,
      pubsub_server: @pubsub,
      broadcast_period: int.(bp),
      max_silent_periods: int.(silent),
      down_period: int.(down),
      permdown_period: int.(permdown),
      clock_sample_periods: int.(samples),
      max_delta_sizes: sizes |> String.split(",") |> Enum.map(int),
      pool_size: int.(pool),
      report_events_to: spawn(&replica_events/0)
    ]

    {:ok, _} = Application.ensure_all_started(:phoenix_pubsub)
    adapter = if filtered == "1", do: FilteredPG2, else: Phoenix.PubSub.PG2
    if filtered == "1", do: FilteredPG2.init_table()
    {:ok, ps} = Phoenix.PubSub.Supervisor.start_link(name: @pubsub, adapter: adapter)
    Process.unlink(ps)
    # Load the tracker's code now: loading it at the first start takes milliseconds that
    # would put this node's first tick behind its peers'.
    for m <- [Phoenix.Tracker, Phoenix.Tracker.Shard, Phoenix.Tracker.State, Phoenix.Tracker.Clock,
              Phoenix.Tracker.DeltaGeneration, Phoenix.Tracker.Replica, PhxsimCrosscheck.Tracker] do
      {:module, _} = Code.ensure_loaded(m)
    end

    spawn(fn -> lag_monitor(System.monotonic_time(:millisecond)) end)
    main = self()
    spawn_link(fn -> read_lines(main) end)
    Log.emit(%{ev: "ready", otp: System.otp_release(), elixir: System.version()})
    loop(%{opts: opts, tracker: nil, owners: %{}})
  end

  # stdin, line by line, as messages to the main loop (which also takes timers)
  defp read_lines(main) do
    case IO.binread(:stdio, :line) do
      :eof -> send(main, :eof)
      {:error, _} -> send(main, :eof)
      line -> send(main, {:line, line}) && read_lines(main)
    end
  end

  # A starved BEAM (a loaded machine) delays every timer and message: the run's timings then say
  # nothing about Phoenix. A 5 ms sleep that wakes late by more than 10 ms is logged, so the
  # report can tell.
  defp lag_monitor(before) do
    Process.sleep(5)
    now = System.monotonic_time(:millisecond)
    lag = now - before - 5
    if lag > 10, do: Log.emit(%{ev: "lag", ms: lag})
    lag_monitor(now)
  end

  # Replica events arrive as {{:replica_up | :replica_down | :replica_permdown, remote}, local}.
  defp replica_events do
    receive do
      {{kind, remote}, _local} when kind in [:replica_up, :replica_down, :replica_permdown] ->
        Log.emit(%{ev: Atom.to_string(kind), remote: Log.short(remote)})
    end

    replica_events()
  end

  defp loop(state) do
    receive do
      :eof ->
        System.halt(0)

      {:line, line} ->
        [cmd | args] = line |> String.trim() |> String.split(" ", trim: true)
        args = Enum.map(args, &Base.decode16!(&1, case: :mixed))
        loop(command(cmd, args, state))

      {:timer, cmd, args} ->
        loop(command(cmd, args, state))
    end
  end

  defp node_atom(name), do: String.to_atom(name <> "@127.0.0.1")

  defp command("clock", [t0], state) do
    Log.set_t0(String.to_integer(t0))
    Log.emit(%{ev: "clock"})
    state
  end

  # A command at an instant of the os clock (ms since the epoch): every node starts its tracker
  # on its own timer at the same instant, rather than when a line reaches it.
  # A command that arrives after its instant runs at once, and says how late it is (a starved
  # node: its timings are not Phoenix's).
  defp command("at", [when_ms, cmd | args], state) do
    delay = String.to_integer(when_ms) - System.os_time(:millisecond)

    if delay > 0 do
      Process.send_after(self(), {:timer, cmd, args}, delay)
      state
    else
      if delay < -10, do: Log.emit(%{ev: "late", ms: -delay, cmd: cmd})
      command(cmd, args, state)
    end
  end

  defp command("connect", [peer], state) do
    Log.emit(%{ev: "connect", peer: peer, ok: Node.connect(node_atom(peer)) == true})
    state
  end

  defp command("disconnect", [peer], state) do
    Node.disconnect(node_atom(peer))
    Log.emit(%{ev: "disconnect", peer: peer})
    state
  end

  defp command("block", [peer], state) do
    FilteredPG2.block(node_atom(peer))
    Log.emit(%{ev: "block", peer: peer})
    state
  end

  defp command("unblock", [peer], state) do
    FilteredPG2.unblock(node_atom(peer))
    Log.emit(%{ev: "unblock", peer: peer})
    state
  end

  defp command("start", [], state) do
    {:ok, pid} = PhxsimCrosscheck.Tracker.start_link(state.opts)
    Process.unlink(pid)
    Log.emit(%{ev: "tracker_start"})
    %{state | tracker: pid}
  end

  defp command("crash", [], state) do
    # the tracker dies first: a halted node reports nothing, so its shard must not see its
    # owners exit (they die with it: the shard's links carry its exit to them)
    for n <- Node.list(), do: Node.disconnect(n)
    stop_tracker(state.tracker)
    for {_client, {pid, _, _}} <- state.owners, do: Process.exit(pid, :kill)
    Log.emit(%{ev: "crashed"})
    %{state | tracker: nil, owners: %{}}
  end

  defp command("permdown", [], state) do
    :ok = Phoenix.Tracker.graceful_permdown(@tracker)
    for n <- Node.list(), do: Node.disconnect(n)
    for {_client, {pid, _, _}} <- state.owners, do: Process.exit(pid, :kill)
    Log.emit(%{ev: "permdowned"})
    %{state | tracker: nil, owners: %{}}
  end

  defp command("track", [client, topic, key, meta], state) do
    owner = spawn(&owner/0)
    result = Phoenix.Tracker.track(@tracker, owner, topic, key, %{"json" => meta})
    Log.emit(%{ev: "api_track", client: client, ok: match?({:ok, _}, result)})
    %{state | owners: Map.put(state.owners, client, {owner, topic, key})}
  end

  defp command("untrack", [client], state) do
    case Map.pop(state.owners, client) do
      {{owner, topic, key}, owners} ->
        :ok = Phoenix.Tracker.untrack(@tracker, owner, topic, key)
        send(owner, :stop)
        Log.emit(%{ev: "api_untrack", client: client})
        %{state | owners: owners}

      {nil, _} ->
        Log.emit(%{ev: "api_untrack", client: client, ok: false})
        state
    end
  end

  defp command("update", [client, meta], state) do
    ok =
      case Map.get(state.owners, client) do
        {owner, topic, key} ->
          match?({:ok, _}, Phoenix.Tracker.update(@tracker, owner, topic, key, %{"json" => meta}))

        nil ->
          false
      end

    Log.emit(%{ev: "api_update", client: client, ok: ok})
    state
  end

  defp command("drop", [client], state) do
    case Map.pop(state.owners, client) do
      {{owner, _, _}, owners} ->
        Process.exit(owner, :kill)
        Log.emit(%{ev: "api_drop", client: client})
        %{state | owners: owners}

      {nil, _} ->
        state
    end
  end

  defp command("list", [topic], state) do
    entries =
      if state.tracker && Process.alive?(state.tracker) do
        PhxsimCrosscheck.Tracker.entries(Phoenix.Tracker.list(@tracker, topic))
      else
        nil
      end

    Log.emit(%{ev: "list", topic: topic, entries: entries})
    state
  end

  defp command("quit", [], _state) do
    Log.emit(%{ev: "bye"})
    System.halt(0)
  end

  defp command(cmd, args, state) do
    Log.emit(%{ev: "error", message: "unknown command #{cmd}/#{length(args)}"})
    state
  end

  defp stop_tracker(nil), do: :ok

  defp stop_tracker(pid) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    end

    # the shards die with their supervisor; wait until their names are free for a restart
    wait_unregistered(:"#{@tracker}_shard0")
  end

  defp wait_unregistered(name) do
    if Process.whereis(name) do
      Process.sleep(1)
      wait_unregistered(name)
    else
      :ok
    end
  end

  defp owner do
    receive do
      :stop -> :ok
    end
  end
end

PhxsimCrosscheck.Node.main(System.argv())
