"""cocaine-etcd: the ``etcd`` storage (one app store for a whole cluster) and the ``etcd``
discovery (nodes registered under leases)."""
