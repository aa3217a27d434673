"""The Redis driver in BullMQ's data format (see docs/drivers/bullmq.md)."""
