"""What happens after validation: the relay's pipeline and the durable queue.

Lives here: relay (forms, attempts, the answer's outcome, follow-ups), queue (stores, the worker, retries,
dead letters; it registers the [queue] schema with the config). May import: core, forms and the transport
floor (providers, abuse, budget, metrics); never web or cli.
"""
