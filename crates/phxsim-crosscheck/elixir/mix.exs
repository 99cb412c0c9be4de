# Fetches and compiles phoenix_pubsub 2.2.0 for `phxsim crosscheck --mix` (the version the
# simulator's faithful profile follows). Written into a cache folder and run with MIX_ENV=prod.
defmodule PhxsimCrosscheckPubsub.MixProject do
  use Mix.Project

  def project do
    [app: :phxsim_crosscheck_pubsub, version: "0.1.0", deps: [{:phoenix_pubsub, "== 2.2.0"}]]
  end
end
