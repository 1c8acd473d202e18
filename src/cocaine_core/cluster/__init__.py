"""The cluster: how nodes find each other (``discovery``) and, later, share load."""
