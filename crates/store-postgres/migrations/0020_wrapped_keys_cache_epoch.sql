-- Key rotation (PRODUCT.md S5): a data key added by one server (or the CLI) moves the cache epoch,
-- so every other server unwraps it within CACHE_EPOCH_POLL: values sealed under it open
-- everywhere, and new values everywhere are sealed under it.
CREATE TRIGGER wrapped_keys_epoch AFTER INSERT ON wrapped_keys
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
