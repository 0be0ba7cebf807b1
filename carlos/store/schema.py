"""Schema of the store as an ordered list of migrations (version, name, statements).

Append new migrations; never edit an applied one. ``Store.migrate`` applies the
missing ones in a transaction and records them in ``schema_migrations``.

Vectors are ``FLOAT[]`` lists with a ``dim`` column and a CHECK that they agree:
a DuckDB fixed-size ``FLOAT[512]`` column holds one size only, and one store
holds several embedding spaces (the corpus's 512-d ViT-B/32, the tiny demo
CLIP's 32-d). Readers pull one space at a time through Arrow into a dense
float32 matrix.
"""

from __future__ import annotations

_V1 = [
    "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    """CREATE TABLE imports (
        source VARCHAR NOT NULL,            -- e.g. 'pypi:carlos==0.0.3'
        file_sha256 VARCHAR NOT NULL,       -- hash of the imported file
        rows INTEGER NOT NULL,
        details JSON,
        imported_at TIMESTAMP NOT NULL DEFAULT now(),
        PRIMARY KEY (source, file_sha256))""",
    """CREATE TABLE loras (
        lora_id VARCHAR PRIMARY KEY,        -- 'civitai:<version_id>' or 'sha256:<hex>'
        source VARCHAR NOT NULL,            -- corpus release or 'upload'
        version_id BIGINT, model_id BIGINT,
        name VARCHAR, description VARCHAR, nsfw_level INTEGER, folder_name VARCHAR,
        download_count BIGINT,
        sha256 VARCHAR,                     -- of the .safetensors file, when we have it
        file_path VARCHAR,                  -- sanitised copy under the cache dir
        file_report JSON,                   -- validation report (format, base, metadata)
        trigger_words VARCHAR[],
        created_at TIMESTAMP NOT NULL DEFAULT now())""",
    "CREATE INDEX loras_version ON loras (version_id)",
    "CREATE INDEX loras_sha ON loras (sha256)",
    "CREATE SEQUENCE rep_seq START 1",
    """CREATE TABLE representations (
        rep_id BIGINT PRIMARY KEY DEFAULT nextval('rep_seq'),
        lora_id VARCHAR NOT NULL,
        embedder VARCHAR NOT NULL,          -- e.g. 'ViT-B-32/openai'
        dim INTEGER NOT NULL,
        direction FLOAT[] NOT NULL,
        strength DOUBLE NOT NULL,
        consistency DOUBLE NOT NULL,
        n_samples INTEGER,                  -- number of CLIP-diffs summarised
        protocol VARCHAR,                   -- 'paper' | 'quick' | 'smoke' | ...
        prompt_set VARCHAR, prompt_hash VARCHAR,
        seeds VARCHAR,                      -- JSON list or a description
        steps INTEGER, scale DOUBLE,
        backend VARCHAR,                    -- generator, e.g. 'sdxl-base-1.0'
        source VARCHAR, source_hash VARCHAR, code_version VARCHAR, job_id BIGINT,
        extra JSON,
        created_at TIMESTAMP NOT NULL DEFAULT now(),
        CHECK (len(direction) = dim))""",
    "CREATE INDEX reps_lora ON representations (lora_id)",
    "CREATE INDEX reps_embedder ON representations (embedder)",
    """CREATE TABLE vector_cache (
        kind VARCHAR NOT NULL,              -- 'query-direction', ...
        cache_key VARCHAR NOT NULL,         -- sha256 of everything the vector depends on
        vector FLOAT[] NOT NULL,
        info JSON,
        created_at TIMESTAMP NOT NULL DEFAULT now(),
        PRIMARY KEY (kind, cache_key))""",
    """CREATE TABLE text_embeddings (
        lora_id VARCHAR NOT NULL, model VARCHAR NOT NULL, text_hash VARCHAR NOT NULL,
        vector FLOAT[] NOT NULL,
        PRIMARY KEY (lora_id, model))""",
    "CREATE SEQUENCE decision_seq START 1",
    """CREATE TABLE decisions (              -- append-only audit log: no UPDATE/DELETE in code
        decision_id BIGINT PRIMARY KEY DEFAULT nextval('decision_seq'),
        lora_id VARCHAR NOT NULL,
        reviewer VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        status_before VARCHAR NOT NULL,
        status_after VARCHAR NOT NULL,
        note VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT now())""",
    "CREATE INDEX decisions_lora ON decisions (lora_id)",
    """CREATE TABLE claims (
        lora_id VARCHAR PRIMARY KEY, reviewer VARCHAR NOT NULL,
        claimed_at TIMESTAMP NOT NULL DEFAULT now())""",
    "CREATE SEQUENCE threshold_seq START 1",
    """CREATE TABLE threshold_settings (
        setting_id BIGINT PRIMARY KEY DEFAULT nextval('threshold_seq'),
        strength_max DOUBLE, consistency_min DOUBLE,
        reviewer VARCHAR NOT NULL, note VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT now())""",
    "CREATE SEQUENCE job_seq START 1",
    """CREATE TABLE jobs (
        job_id BIGINT PRIMARY KEY DEFAULT nextval('job_seq'),
        lora_id VARCHAR NOT NULL,
        file_path VARCHAR NOT NULL,
        backend VARCHAR NOT NULL, protocol VARCHAR NOT NULL,
        options JSON,                       -- trigger words, clip model, ...
        status VARCHAR NOT NULL DEFAULT 'queued',
        done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,
        error VARCHAR, worker VARCHAR, requested_by VARCHAR,
        heartbeat TIMESTAMP, created_at TIMESTAMP NOT NULL DEFAULT now(),
        started_at TIMESTAMP, finished_at TIMESTAMP,
        CHECK (status IN ('queued', 'running', 'finished', 'failed', 'cancelled')))""",
    """CREATE TABLE pair_results (           -- one CLIP-diff per (job, pair); resumable
        job_id BIGINT NOT NULL, pair_index INTEGER NOT NULL,
        prompt VARCHAR NOT NULL, category VARCHAR, seed INTEGER NOT NULL,
        diff FLOAT[] NOT NULL,
        PRIMARY KEY (job_id, pair_index))""",
    """CREATE TABLE base_cache (             -- base-image embeddings shared by every LoRA
        base_key VARCHAR NOT NULL, prompt VARCHAR NOT NULL, seed INTEGER NOT NULL,
        embedding FLOAT[] NOT NULL, thumbnail BLOB,
        PRIMARY KEY (base_key, prompt, seed))""",
    """CREATE TABLE thumbnails (
        job_id BIGINT NOT NULL, pair_index INTEGER NOT NULL,
        base_png BLOB, lora_png BLOB,
        PRIMARY KEY (job_id, pair_index))""",
    """CREATE TABLE map_cache (
        map_key VARCHAR NOT NULL, lora_id VARCHAR NOT NULL, x DOUBLE NOT NULL, y DOUBLE NOT NULL,
        PRIMARY KEY (map_key, lora_id))""",
]

_V2 = [
    """CREATE TABLE job_rounds (             -- an adaptive job's decision after each round (live view)
        job_id BIGINT NOT NULL, round_index INTEGER NOT NULL,
        n INTEGER NOT NULL,                 -- pairs of the rounds so far
        decision JSON NOT NULL,             -- StopDecision.to_dict() + point values and message
        decided_at TIMESTAMP NOT NULL DEFAULT now(),
        PRIMARY KEY (job_id, round_index))""",
]

_V3 = [  # bounded caches (store/caches.py): last-used times (unix seconds) and logical sizes for LRU eviction
    "ALTER TABLE vector_cache ADD COLUMN last_used DOUBLE",
    "ALTER TABLE vector_cache ADD COLUMN nbytes BIGINT",
    """UPDATE vector_cache SET last_used = epoch(created_at),
        nbytes = 4 * len(vector) + strlen(kind) + strlen(cache_key) + strlen(coalesce(CAST(info AS VARCHAR), ''))""",
    """CREATE TABLE map_cache_entries (      -- one row per cached map (its points are in map_cache)
        map_key VARCHAR PRIMARY KEY,
        n_points INTEGER NOT NULL,
        nbytes BIGINT NOT NULL,             -- logical size: 16 bytes of x, y + the id and key per point
        created_at TIMESTAMP NOT NULL DEFAULT now(),
        last_used DOUBLE)""",
    """INSERT INTO map_cache_entries (map_key, n_points, nbytes, last_used)
        SELECT map_key, count(*), sum(16 + strlen(map_key) + strlen(lora_id)), epoch(now()) FROM map_cache GROUP BY map_key""",
]

_V4 = [  # weight-space fingerprints (store/fingerprints.py, carlos/weights) and the matches found between them
    """CREATE TABLE weight_fingerprints (
        lora_id VARCHAR PRIMARY KEY,        -- a LoRA's id; 'sha256:<hex>' for uploads and fingerprinted files
        sha256 VARCHAR, file_name VARCHAR, file_path VARCHAR, format VARCHAR,
        spec VARCHAR NOT NULL,              -- projections, e.g. 'weights-v1/d256/k4/s20260415'
        dim INTEGER NOT NULL,
        vector FLOAT[] NOT NULL,            -- the search vector (cosine)
        norm DOUBLE NOT NULL,               -- exact Frobenius norm of the whole ΔW
        module_names VARCHAR[] NOT NULL,    -- canonical module names, sorted
        module_norms FLOAT[] NOT NULL,      -- exact norm per module
        module_sketches BLOB NOT NULL,      -- little-endian float32, one k*k sketch per module
        stats JSON, code_version VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT now(),
        CHECK (len(vector) = dim), CHECK (len(module_names) = len(module_norms)))""",
    "CREATE INDEX weight_fingerprints_sha ON weight_fingerprints (sha256)",
    """CREATE TABLE weight_matches (         -- how lora_id's weights relate to other_id's; both sides written
        lora_id VARCHAR NOT NULL, other_id VARCHAR NOT NULL,
        label VARCHAR NOT NULL, kind VARCHAR,
        cosine DOUBLE NOT NULL, scale DOUBLE, exact BOOLEAN NOT NULL,
        detail JSON,
        created_at TIMESTAMP NOT NULL DEFAULT now(),
        PRIMARY KEY (lora_id, other_id))""",
]

#: (version, name, statements), applied in order.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", _V1),
    (2, "adaptive job rounds", _V2),
    (3, "bounded caches: last use and size", _V3),
    (4, "weight fingerprints and matches", _V4),
]
SCHEMA_VERSION = max(version for version, _, _ in MIGRATIONS)  # migrations may be appended out of order
