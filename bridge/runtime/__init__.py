"""Running the daemon: the driver registry, building drivers from the config, the pipeline threads, the sink
runners and the daemon itself."""
