"""The validated scenario model (scenario) and the connect settings with every connect rule
(config)."""
