-- Partitions (`--partition I/N`): the students of a night split among N
-- processes by a stable hash of the user id (src/runtime/partition.rs).

-- The partition hash in SQL, equal to `runtime::partition::user_hash`: the
-- first 8 bytes of SHA-256 of the id's UTF-8 text, big-endian, top bit
-- cleared (a non-negative bigint). Partition I of N holds the hashes h with
-- floor(h * N / 2^63) = I. IMMUTABLE so that an index may be built on it.
CREATE FUNCTION aidt_user_hash(user_id text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ('x' || substr(encode(sha256(convert_to(user_id, 'UTF8')), 'hex'), 1, 16))::bit(64)::bigint
                 & x'7fffffffffffffff'::bigint $$;

-- A partition's checkpoint is its own: '' for an unpartitioned run, else 'I/N'.
ALTER TABLE batch_checkpoint ADD COLUMN part text NOT NULL DEFAULT '';
ALTER TABLE batch_checkpoint DROP CONSTRAINT batch_checkpoint_pkey;
ALTER TABLE batch_checkpoint ADD PRIMARY KEY (job_id, business_date, part);

-- DC-01-001's requests in doubt belong to the partition that sent them: its
-- rerun resumes them, no other run does ('' for an unpartitioned run).
ALTER TABLE batch_keris_request ADD COLUMN part text NOT NULL DEFAULT '';
