"""The cocaine-cgroups plugin module (resource limits land with the cgroups work)."""
