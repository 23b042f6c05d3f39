-- pkmanager schema version 4: the deposit index (store.DepositIndex), a
-- copy of where the deposit contract's DepositEvents are: one row per
-- (IndexKey of a public key, block holding a DepositEvent for it). The key is
-- the uint64 IndexKey's bits as a bigint. Derived from the chain: not part of
-- a Dump.
CREATE TABLE pkm_deposit_index (
    key   bigint NOT NULL,
    block bigint NOT NULL CHECK (block >= 0),
    PRIMARY KEY (key, block)
);

-- One row: where the index stands (source '' = empty index).
CREATE TABLE pkm_deposit_index_cursor (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    source text    NOT NULL DEFAULT '',
    next   bigint  NOT NULL DEFAULT 0 CHECK (next >= 0),
    hash   bytea   NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
        CHECK (length(hash) = 32)
);
INSERT INTO pkm_deposit_index_cursor DEFAULT VALUES;
