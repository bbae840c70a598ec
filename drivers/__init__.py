"""Device and model drivers, one module per device or model, each behind an interface of `bridge.core.interfaces`."""
