"""Access to the proxy: API keys, scoped to services, kept on a compacted Kafka topic.

| module | what |
|---|---|
| :mod:`~rendezvous.access.keys` | pure: a new key, its stored digest and scope, the :class:`KeyRing` |
| :mod:`~rendezvous.access.quota` | pure: requests (or tokens) per key and window, counted per replica and summed across replicas |
| :mod:`~rendezvous.access.cost` | pure: what a request costs, 1 or its models' quota weights |
| :mod:`~rendezvous.access.log` | the ``rdv.api-keys`` and ``rdv.usage`` topics: read whole, appended to, followed by each proxy |
| :mod:`~rendezvous.access.cli` | ``rendezvous keys create|list|revoke`` |

The proxy's side (the check on each request, and publishing its counts) is
:mod:`rendezvous.proxy.access`.
"""
