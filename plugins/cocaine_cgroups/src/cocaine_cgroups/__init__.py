"""cocaine-cgroups: ``engine.resource-limits`` through Linux cgroups, v1 and v2.

Give an app limits in its manifest, in the original cocaine's form::

    "engine": {"resource-limits": {"memory": {"memory.limit_in_bytes": "256M"},
                                   "cpuset": {"cpuset.cpus": "0-1"}}}

and every process of the app (its template and its slaves) runs in a cgroup of its own,
beneath the node's. See ``docs/resource-limits.md`` for every parameter.
"""
