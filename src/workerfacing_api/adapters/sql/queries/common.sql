-- The queue's statements that PostgreSQL and SQLite run alike, each written once.
--
-- Loaded by name (see __init__.py). Timestamps are timestamptz on PostgreSQL and fixed-width UTC
-- text on SQLite, which compares and sorts like time. A job row comes back with the columns
-- rows.job_from reads. "Active" is the four states between a pull and the end, spelt exactly
-- as in the partial index ix_jobs_active_worker so that the planner can use it.


-- name: fits
-- Not a statement: the predicate of a pull, filled into the claims of both dialects as {fits}.
-- DESIGN §3's matching: a queued job of the worker's environment, or of none once it has waited
-- :any_before, whose every requirement the worker meets. Requirements are stored with
-- "anything" as 0 (numbers) or NULL (names), so that numbers are plain ranges an index serves.
status = 'queued'
    AND (environment = :environment OR (environment = 'any' AND created_at <= :any_before))
    AND req_cpu_cores <= :cpu_cores AND req_memory <= :memory AND req_gpu_mem <= :gpu_mem
    AND (req_gpu_model IS NULL OR req_gpu_model = :gpu_model)
    AND (req_gpu_archi IS NULL OR req_gpu_archi = :gpu_archi)


-- name: insert_job
-- A new job, queued for its first attempt. The caller cancelled any live job with the same
-- upstream id first, in the same transaction: the unique index on live upstream ids refuses a
-- second one, so two racing submissions of one id cannot both stay live.
INSERT INTO jobs (
    upstream_id, status, environment, job_group, priority,
    req_cpu_cores, req_memory, req_gpu_mem, req_gpu_model, req_gpu_archi, spec, paths_upload,
    attempt, num_retries, event_seq, attempted_by, created_at, updated_at
) VALUES (
    :upstream_id, 'queued', :environment, :job_group, :priority,
    :req_cpu_cores, :req_memory, :req_gpu_mem, :req_gpu_model, :req_gpu_archi, :spec,
    :paths_upload, 0, 0, 0, '[]', :now, :now
)
RETURNING id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at;


-- name: cancel_live_jobs_of_upstream_id
-- A submission supersedes every job with its meta.job_id that is not cancelled yet: the
-- user-facing API reuses the ids of deleted jobs without telling, and the old job must never
-- report into the new job's status or folders. The caller drops the events of the jobs returned.
UPDATE jobs SET status = 'cancelled', updated_at = :now
WHERE upstream_id = :upstream_id AND status <> 'cancelled'
RETURNING id;


-- name: cancel_job
-- The user deleted the job (the upstream answered 404): it leaves the queue for good and never
-- changes again. The caller drops its undelivered events in the same transaction, so nothing
-- more is said about it upstream.
UPDATE jobs SET status = 'cancelled', updated_at = :now
WHERE id = :id AND status <> 'cancelled'
RETURNING id;


-- name: get_job
SELECT id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at
FROM jobs
WHERE id = :id;


-- name: active_jobs_of_worker
-- The jobs a worker holds now: it may download only their input files.
SELECT id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at
FROM jobs
WHERE worker = :worker AND status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
ORDER BY id;


-- name: find_expired
-- Active jobs whose worker has said nothing since :before, the longest silence first. Only
-- active jobs time out, and the partial index on them finds these without reading the queue.
SELECT id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at
FROM jobs
WHERE status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
    AND last_heartbeat_at < :before
ORDER BY last_heartbeat_at, id
LIMIT :limit;


-- The two changes below are each a compare-and-set on the snapshot the core decided on:
-- (id, status, attempt), and event_seq as well when the change records an event (:record = 1),
-- which it then counts. No row back means the snapshot was stale and nothing changed: a late
-- worker update cannot touch a job that was re-queued and pulled by another worker, a late sweep
-- cannot undo a worker's update, and two events of one job commit one after the other, so the
-- later one always sees the earlier when it checks the job's line in the outbox. A cancelled job
-- never changes again. Only the columns a change can touch come back: the rest of the job (its
-- document above all) is the snapshot's, and reading it back on every keep-alive is waste. The caller records the event (SQLite: its next statement; PostgreSQL:
-- the same statement, see change_job in postgres.sql).

-- name: record_update
-- A worker's accepted update: the state it reports (the same one again is a keep-alive), a
-- fresh heartbeat, and its runtime_details when it sent some.
UPDATE jobs
SET status = :status, last_heartbeat_at = :now, updated_at = :now,
    runtime_details = COALESCE(:details, runtime_details), event_seq = event_seq + :record
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status <> 'cancelled' AND (:record = 0 OR event_seq = :expected_event_seq)
RETURNING id, upstream_id, status, worker, attempt, num_retries, event_seq, runtime_details,
    updated_at, last_heartbeat_at;


-- name: end_silent_attempt
-- The sweep ends the attempt of a job whose worker fell silent: with :requeue = 1 the job goes
-- back to the queue for one retry more, with :requeue = 0 (its retries are used up) it fails.
-- It must still be active and still silent: a keep-alive that won the race keeps the job.
UPDATE jobs
SET status = CASE WHEN :requeue = 1 THEN 'queued' ELSE 'error' END,
    worker = CASE WHEN :requeue = 1 THEN NULL ELSE worker END,
    num_retries = num_retries + :requeue,
    runtime_details = :details, updated_at = :now, event_seq = event_seq + :record
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status <> 'cancelled' AND (:record = 0 OR event_seq = :expected_event_seq)
    AND status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
    AND last_heartbeat_at < :heartbeat_before
RETURNING id, upstream_id, status, worker, attempt, num_retries, event_seq, runtime_details,
    updated_at, last_heartbeat_at;


-- name: expedite_events
-- The upstream answers again: every postponed event is due now (order per job is kept by the
-- lease, which only hands out the oldest event of a job).
UPDATE status_events SET due_at = :now WHERE due_at > :now;


-- Operator views (workerfacing-api jobs stats|show), read-only.

-- name: count_jobs_by_status
SELECT status, count(*) AS n FROM jobs GROUP BY status;


-- name: oldest_queued_job
SELECT id, created_at FROM jobs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1;


-- name: outbox_backlog
SELECT count(*) AS n, min(created_at) AS oldest FROM status_events;


-- name: attempts_of_job
SELECT attempt, worker, pulled_at FROM job_attempts WHERE job_id = :id ORDER BY attempt;


-- name: events_of_job
SELECT id, job_id, upstream_id, status, runtime_details, created_at, attempts
FROM status_events
WHERE job_id = :id
ORDER BY id;
