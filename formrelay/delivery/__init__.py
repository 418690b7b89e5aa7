"""What comes after validation: the relay's rooms and the durable queue (docs/architecture.md).

Lives here: relay (the Flask extension wiring the rooms), form (a configured form at run time), screening,
idempotency, dispatch, handler, targets (the registry of job target kinds) with its kinds primary, followup and
destinations, capacity (the outbox), attempts (bulkhead, breaker, attempt threads), answers (the relay's words);
the queue: settings ([queue], registered with the config), jobs (Job, states, backoff), stores (the Store
interface, SQLite, Redis and its Lua) and the worker (claims jobs, hands each to a handler; it knows no relay).
May import: core, forms and the transport floor (providers, abuse, budget, metrics); never web or cli.
No provider is named here: a kind of target that needs one asks the providers package.
"""
