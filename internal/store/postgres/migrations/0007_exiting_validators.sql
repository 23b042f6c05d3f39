-- pkmanager schema version 7: the exiting state (the server signed the key's
-- voluntary exit; never handed out) and each key's last validator reading
-- from the beacon node (store.ValidatorStatus, written by RecordValidators;
-- uint64 epochs, index and balance bit for bit in bigint, FAR_FUTURE_EPOCH
-- is -1). No foreign key to pkm_keys: its check would share-lock every key
-- row a refresh writes, and claims skip locked keys (keys are never deleted).
ALTER TABLE pkm_keys DROP CONSTRAINT pkm_keys_state_check;
ALTER TABLE pkm_keys ADD CONSTRAINT pkm_keys_state_check CHECK (state IN ('pending-deposit', 'available', 'assigned',
    'cooling-down', 'retired', 'deposit-failed', 'still-signing', 'exiting'));
CREATE TABLE pkm_validators (
    pubkey           bytea       PRIMARY KEY CHECK (length(pubkey) = 48),
    idx              bigint      NOT NULL,
    status           text        NOT NULL CHECK (status <> ''),
    balance          bigint      NOT NULL,
    activation_epoch bigint      NOT NULL,
    exit_epoch       bigint      NOT NULL,
    slashed          boolean     NOT NULL,
    epoch            bigint      NOT NULL,
    read_at          timestamptz NOT NULL
);
