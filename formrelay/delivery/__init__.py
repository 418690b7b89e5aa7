"""What happens after validation: attempts, the durable queue, retries; imports core, forms and the transport floor."""
