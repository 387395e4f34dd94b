-- Key rotation (PRODUCT.md S5): a data key added on one server (or by the CLI on the same file)
-- reaches every other server within CACHE_EPOCH_POLL, which then unwraps it with the master key:
-- values sealed under it open everywhere, and new values everywhere are sealed under it.
CREATE TRIGGER wrapped_keys_epoch_insert AFTER INSERT ON wrapped_keys BEGIN UPDATE cache_epoch SET n = n + 1; END;
