"""The sweep's Tune experiment: its tuner and searchers, the strategies, the recorder."""
