"""The fleet: environments sharded across live replicas by lease in a PostgreSQL state store.

``assign`` holds the pure rules (who should own what), ``shards`` the runtime part (heartbeat, leases,
the ``owns(env)`` predicate the watchers consult, metrics). The statements are in
:mod:`bot.state.shards`.
"""
