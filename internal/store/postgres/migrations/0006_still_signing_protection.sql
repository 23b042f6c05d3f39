-- pkmanager schema version 6: the still-signing state (a released key the
-- beacon node saw signing; never handed out) and slashing-protection
-- watermarks per key (store.Protection, merged by Release): the highest
-- signed block slot, and the highest attestation source and target
-- epochs (both or neither).
ALTER TABLE pkm_keys DROP CONSTRAINT pkm_keys_state_check;
ALTER TABLE pkm_keys ADD CONSTRAINT pkm_keys_state_check CHECK (state IN ('pending-deposit', 'available', 'assigned',
    'cooling-down', 'retired', 'deposit-failed', 'still-signing'));
ALTER TABLE pkm_keys
    ADD COLUMN sp_block_slot   bigint,
    ADD COLUMN sp_source_epoch bigint,
    ADD COLUMN sp_target_epoch bigint,
    ADD CONSTRAINT pkm_keys_protection CHECK (
        (sp_source_epoch IS NULL) = (sp_target_epoch IS NULL) AND
        (sp_source_epoch IS NULL OR sp_source_epoch <= sp_target_epoch));
