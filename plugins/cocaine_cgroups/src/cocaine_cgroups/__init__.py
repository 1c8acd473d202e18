"""cocaine-cgroups: see README.md."""
