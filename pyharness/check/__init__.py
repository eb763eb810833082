"""The model against the guest: the driver model, divergences and workloads."""
