"""What happens after validation: the relay's pipeline and the durable queue.

Lives here: relay (forms, attempts, the answer's outcome, follow-ups); the queue: settings ([queue], registered
with the config), jobs (Job, states, backoff), stores (the Store interface, SQLite, Redis and its Lua) and the
worker (claims jobs, hands each to the relay's handler; it knows no relay). May import: core, forms and the
transport floor (providers, abuse, budget, metrics); never web or cli.
"""
