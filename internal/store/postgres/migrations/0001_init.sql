-- pkmanager schema version 1. Every table lives in the connection's current
-- schema (search_path). Times are timestamptz (microseconds); NULL means "not
-- set". uint64 values (amounts, nonces, blocks) are kept bit for bit in
-- bigint.

-- One row: the next free derivation index (ReserveIndices).
CREATE TABLE pkm_meta (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    next_index bigint  NOT NULL DEFAULT 0 CHECK (next_index BETWEEN 0 AND 4294967296)
);
INSERT INTO pkm_meta DEFAULT VALUES;

-- One row: the last audit sequence number. Appending an event locks this row
-- until commit, so sequence numbers increase in commit order.
CREATE TABLE pkm_audit_seq (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    last bigint  NOT NULL DEFAULT 0 CHECK (last >= 0)
);
INSERT INTO pkm_audit_seq DEFAULT VALUES;

CREATE TABLE pkm_bindings (
    name  text PRIMARY KEY CHECK (name <> ''),
    value text NOT NULL
);

-- A pod that holds (or is intended) keys, and the UID they are held under.
-- Every transaction that changes a pod's set locks its row first, so one
-- pod's changes are serialized across all replicas.
CREATE TABLE pkm_pods (
    name text PRIMARY KEY CHECK (name <> ''),
    uid  text NOT NULL DEFAULT '',
    UNIQUE (name, uid)
);

CREATE TABLE pkm_keys (
    pubkey           bytea       PRIMARY KEY CHECK (length(pubkey) = 48),
    state            text        NOT NULL CHECK (state IN ('pending-deposit', 'available', 'assigned', 'cooling-down', 'retired', 'deposit-failed')),
    origin           text        NOT NULL CHECK (origin IN ('random', 'derived', 'imported')),
    derivation_index bigint      CHECK (derivation_index BETWEEN 0 AND 4294967295),
    pod              text,
    pod_uid          text,
    last_pod         text        NOT NULL DEFAULT '',
    since            timestamptz NOT NULL,
    cooling_until    timestamptz,
    released_at      timestamptz,
    retired_reason   text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL,
    -- AEAD ciphertext of the secret key, exactly as the server sealed it.
    sealed_secret    bytea       NOT NULL CHECK (length(sealed_secret) > 0),
    -- Deposit data: all NULL or all set.
    dep_withdrawal_credentials bytea CHECK (length(dep_withdrawal_credentials) = 32),
    dep_amount_gwei            bigint,
    dep_signature              bytea CHECK (length(dep_signature) = 96),
    dep_message_root           bytea CHECK (length(dep_message_root) = 32),
    dep_data_root              bytea CHECK (length(dep_data_root) = 32),
    dep_fork_version           bytea CHECK (length(dep_fork_version) = 4),
    dep_network                text,
    -- Deposit transaction: present when tx_hash is set.
    tx_nonce       bigint,
    tx_hash        bytea CHECK (length(tx_hash) = 32),
    tx_raw         bytea,
    tx_block       bigint,
    tx_recorded_at timestamptz,

    -- A key has at most one holder (this row's pod), and every key of a pod
    -- carries the pod's one UID: (pod, pod_uid) must be a row of pkm_pods,
    -- and changing the pod's UID changes all its keys.
    CONSTRAINT pkm_keys_pod_fk FOREIGN KEY (pod, pod_uid) REFERENCES pkm_pods (name, uid) ON UPDATE CASCADE,
    CONSTRAINT pkm_keys_pod_uid CHECK ((pod IS NULL) = (pod_uid IS NULL)),
    CONSTRAINT pkm_keys_pod_state CHECK (pod IS NULL OR state IN ('assigned', 'pending-deposit')),
    CONSTRAINT pkm_keys_assigned CHECK (state <> 'assigned' OR (pod IS NOT NULL AND last_pod = pod)),
    CONSTRAINT pkm_keys_cooling CHECK ((state = 'cooling-down') = (cooling_until IS NOT NULL)),
    CONSTRAINT pkm_keys_derived CHECK (origin <> 'derived' OR derivation_index IS NOT NULL),
    CONSTRAINT pkm_keys_deposit CHECK (
        (dep_signature IS NULL) = (dep_withdrawal_credentials IS NULL) AND
        (dep_signature IS NULL) = (dep_amount_gwei IS NULL) AND
        (dep_signature IS NULL) = (dep_message_root IS NULL) AND
        (dep_signature IS NULL) = (dep_data_root IS NULL) AND
        (dep_signature IS NULL) = (dep_fork_version IS NULL) AND
        (dep_signature IS NULL) = (dep_network IS NULL)),
    CONSTRAINT pkm_keys_tx CHECK (
        (tx_hash IS NULL) = (tx_nonce IS NULL) AND
        (tx_hash IS NULL) = (tx_raw IS NULL) AND
        (tx_hash IS NULL) = (tx_block IS NULL) AND
        (tx_hash IS NOT NULL OR tx_recorded_at IS NULL))
);

-- Claim's order: available keys oldest ReleasedAt first (never released
-- last: NULLs sort last), then CreatedAt, then pubkey.
CREATE INDEX pkm_keys_available ON pkm_keys (released_at, created_at, pubkey) WHERE state = 'available';
-- Expired cooling-down keys, earliest CoolingUntil first.
CREATE INDEX pkm_keys_cooling_until ON pkm_keys (cooling_until, pubkey) WHERE state = 'cooling-down';
-- A pod's set (and the foreign key's cascade).
CREATE INDEX pkm_keys_pod ON pkm_keys (pod, pod_uid, pubkey) WHERE pod IS NOT NULL;
-- No index on state alone: every claim changes a key's state, and Counts
-- and listings by state read most of the table anyway.

CREATE TABLE pkm_audit (
    seq     bigint      PRIMARY KEY CHECK (seq > 0),
    time    timestamptz NOT NULL,
    action  text        NOT NULL CHECK (action <> ''),
    pod     text        NOT NULL DEFAULT '',
    pod_uid text        NOT NULL DEFAULT '',
    pubkeys bytea[]     NOT NULL DEFAULT '{}',
    reason  text        NOT NULL DEFAULT '',
    actor   text        NOT NULL DEFAULT ''
);

-- Claim in one round trip: the whole of Store.Claim (see claim.go for the
-- rules) as one statement, so a claim is one call in its own transaction.
-- Returns first a summary row (pubkey NULL; recycled, available), then the
-- pod's keys in pubkey order (sealed_secret NULL for pending keys).
-- Errors: SQLSTATE PKUID when the pod's keys are held under another UID.
CREATE FUNCTION pkm_claim(p_pod text, p_uid text, p_want integer, p_now timestamptz, p_aon boolean, p_retries integer)
RETURNS TABLE (pubkey bytea, state text, origin text, derivation_index bigint, pod text, pod_uid text,
    last_pod text, since timestamptz, cooling_until timestamptz, released_at timestamptz,
    retired_reason text, created_at timestamptz, sealed_secret bytea, recycled integer, available integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_row_uid  text;
    v_inserted boolean := false;
    v_held     integer;
    v_rec      text;
    v_uid      text;
    v_fill     boolean;
    v_need     integer;
    v_avail    integer := 0;
    v_taken    integer := 0;
BEGIN
    -- Lock the pod's row (every change to a pod's set does so first).
    SELECT p.uid INTO v_row_uid FROM pkm_pods p WHERE p.name = p_pod FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO pkm_pods (name, uid) VALUES (p_pod, p_uid) ON CONFLICT (name) DO NOTHING;
        v_inserted := FOUND;
        SELECT p.uid INTO v_row_uid FROM pkm_pods p WHERE p.name = p_pod FOR UPDATE;
    END IF;
    SELECT count(*) INTO v_held FROM pkm_keys k WHERE k.pod = p_pod;
    v_rec := CASE WHEN v_held > 0 THEN v_row_uid ELSE '' END;
    IF p_uid <> '' AND v_rec <> '' AND v_rec <> p_uid THEN
        RAISE EXCEPTION 'claim for pod %: its keys are held under pod UID %, not %', p_pod, v_rec, p_uid
            USING ERRCODE = 'PKUID';
    END IF;
    IF v_rec <> '' THEN
        v_uid := v_rec;
        v_fill := false;
    ELSE
        v_uid := p_uid;
        v_fill := p_uid <> '' AND v_held > 0;
    END IF;
    v_need := p_want - v_held;
    IF v_need > 0 AND p_aon THEN
        SELECT (SELECT count(*) FROM (SELECT 1 FROM pkm_keys k WHERE k.state = 'available' LIMIT v_need) a)
             + (SELECT count(*) FROM (SELECT 1 FROM pkm_keys k WHERE k.state = 'cooling-down'
                    AND k.cooling_until <= p_now LIMIT v_need) c)
          INTO v_avail;
        IF v_avail < v_need THEN
            v_need := 0;   -- held back: nothing changes, no UID fill-in either
            v_fill := false;
        ELSE
            v_avail := 0;
        END IF;
    END IF;
    IF v_need > 0 AND p_aon THEN
        BEGIN
            IF v_row_uid <> v_uid THEN
                UPDATE pkm_pods SET uid = v_uid WHERE name = p_pod;
            END IF;
            v_taken := pkm_take(p_pod, v_uid, v_need, p_now, p_retries);
            IF v_taken < v_need THEN
                RAISE EXCEPTION USING ERRCODE = 'PKAON';
            END IF;
        EXCEPTION WHEN SQLSTATE 'PKAON' THEN
            -- Other claims hold part of the pool right now: all or nothing
            -- means nothing (the block's changes are undone).
            v_avail := v_taken;
            v_taken := 0;
        END;
    ELSE
        IF (v_need > 0 OR v_fill) AND v_row_uid <> v_uid THEN
            -- The foreign key's cascade rewrites the UID of the pod's keys.
            UPDATE pkm_pods SET uid = v_uid WHERE name = p_pod;
        END IF;
        IF v_need > 0 THEN
            v_taken := pkm_take(p_pod, v_uid, v_need, p_now, p_retries);
        END IF;
    END IF;
    IF v_inserted AND v_taken = 0 THEN
        DELETE FROM pkm_pods WHERE name = p_pod AND NOT EXISTS (SELECT 1 FROM pkm_keys k WHERE k.pod = p_pod);
    END IF;
    RETURN QUERY SELECT NULL::bytea, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text,
        NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::timestamptz, NULL::bytea,
        v_taken, v_avail;
    RETURN QUERY SELECT k.pubkey, k.state, k.origin, k.derivation_index, k.pod, k.pod_uid, k.last_pod,
        k.since, k.cooling_until, k.released_at, k.retired_reason, k.created_at,
        CASE WHEN k.state = 'assigned' THEN k.sealed_secret END, 0, 0
        FROM pkm_keys k WHERE k.pod = p_pod ORDER BY k.pubkey;
END
$$;

-- Takes up to p_need pool keys for the pod (available keys in recycling
-- order, then cooling-down keys due at p_now), skipping keys other
-- transactions hold locked; while claimable keys remain locked by others it
-- waits briefly and looks again (at most p_retries times), so a concurrent
-- sweep does not cause a spurious shortfall. Returns how many it took.
CREATE FUNCTION pkm_take(p_pod text, p_uid text, p_need integer, p_now timestamptz, p_retries integer)
RETURNS integer LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_taken   integer := 0;
    v_n       integer;
    v_attempt integer := 0;
BEGIN
    LOOP
        WITH picked AS (
            SELECT k.pubkey FROM pkm_keys k WHERE k.state = 'available'
            ORDER BY k.released_at, k.created_at, k.pubkey LIMIT p_need - v_taken FOR UPDATE SKIP LOCKED)
        UPDATE pkm_keys k SET state = 'assigned', pod = p_pod, pod_uid = p_uid, last_pod = p_pod,
            since = p_now, cooling_until = NULL
        FROM picked WHERE k.pubkey = picked.pubkey AND k.state = 'available';
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_taken := v_taken + v_n;
        IF v_taken < p_need THEN
            WITH picked AS (
                SELECT k.pubkey FROM pkm_keys k WHERE k.state = 'cooling-down' AND k.cooling_until <= p_now
                ORDER BY k.cooling_until, k.pubkey LIMIT p_need - v_taken FOR UPDATE SKIP LOCKED)
            UPDATE pkm_keys k SET state = 'assigned', pod = p_pod, pod_uid = p_uid, last_pod = p_pod,
                since = p_now, cooling_until = NULL
            FROM picked WHERE k.pubkey = picked.pubkey AND k.state = 'cooling-down' AND k.cooling_until <= p_now;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_taken := v_taken + v_n;
        END IF;
        EXIT WHEN v_taken >= p_need OR v_attempt >= p_retries;
        -- What is still claimable is locked by another transaction.
        PERFORM 1 FROM pkm_keys k
            WHERE k.state = 'available' OR (k.state = 'cooling-down' AND k.cooling_until <= p_now) LIMIT 1;
        EXIT WHEN NOT FOUND;
        v_attempt := v_attempt + 1;
        PERFORM pg_sleep(least(v_attempt, 10) / 1000.0);
    END LOOP;
    RETURN v_taken;
END
$$;
