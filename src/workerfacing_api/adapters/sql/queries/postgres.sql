-- What only PostgreSQL says: each change in one statement, with what follows from it
-- (data-modifying CTEs commit together), concurrent claims kept apart by FOR UPDATE SKIP LOCKED,
-- and id lists passed as arrays (= ANY).


-- name: timestamp_type
-- Not a statement: the type of a timestamp parameter where nothing else says it (CAST).
timestamptz


-- name: claim_jobs
-- Claim up to :limit fitting jobs for node :node of account :worker, as many as the node may
-- hold beside its active jobs (:max_held): each gets its next attempt, an attempt row and, when
-- events are recorded (:record = 1), its 'pulled' event, all in this one statement.
-- Invariant: a job is handed to exactly one worker per attempt. The jobs are locked by the
-- statement that updates them ({pick_in_queue_order} ends in FOR UPDATE SKIP LOCKED):
-- concurrent claims take different jobs and never wait on each other, and nothing is read first
-- and locked later. Rows come back in no order, each naming the node it answers (claimed_for:
-- claims of several nodes may run as one group, see postgres.Groups).
WITH picked AS ({pick_in_queue_order}),
{claim_picked}


-- name: claim_jobs_preferring_groups
-- The same for a worker that prefers groups (:groups).
WITH picked AS ({pick_preferring_groups}),
{claim_picked}


-- name: claim_picked
-- Not a statement: the rest of both claims, after the CTE "picked"; the jobs it took are
-- "changed", as for the other changes (record_event reads them so). The event is leased to this
-- request (to be sent inline) only when no older event of its job is pending; otherwise the
-- dispatcher sends it after them, in order.
-- Invariant: a node holds at most :max_held active jobs, however many of its pulls run at once.
-- The jobs it holds are counted in this statement's snapshot ({held_by_node}), which a
-- concurrent claim for the same node may have outdated. So a claim that takes jobs moves the
-- node's claim_seq in the same statement: the update waits for any other claim of the node in
-- flight and reads the node's latest row, and when claim_seq moved since the snapshot, the
-- count was early: nothing is taken (the picked jobs stay queued; their locks end with the
-- statement) and the answer's "retry" asks the adapter to run the claim again, on a fresh
-- snapshot. Jobs that ended since only make the count too high, never too low.
seen AS (SELECT claim_seq FROM nodes WHERE node = :node),
room AS (SELECT greatest(0, :max_held - ({held_by_node})) AS n),
taken AS (
    SELECT id FROM picked ORDER BY rank, priority DESC, created_at, id
    -- A pull that picked nothing (most of them) counts nothing.
    LIMIT CASE WHEN EXISTS (SELECT 1 FROM picked) THEN (SELECT n FROM room) ELSE 0 END
),
bumped AS (
    UPDATE nodes SET claim_seq = claim_seq + 1
    WHERE node = :node AND EXISTS (SELECT 1 FROM taken)
    RETURNING claim_seq - 1 AS before
),
granted AS (
    SELECT 1 FROM bumped JOIN seen ON bumped.before = seen.claim_seq
    -- No row for the node (record_seen writes it before the first claim): nothing to wait for.
    UNION ALL SELECT 1 WHERE EXISTS (SELECT 1 FROM taken) AND NOT EXISTS (SELECT 1 FROM seen)
),
changed AS (
    UPDATE jobs
    SET status = 'pulled', worker = CAST(:worker AS text), node = CAST(:node AS text),
        attempt = jobs.attempt + 1,
        attempted_by = jobs.attempted_by || jsonb_build_array(CAST(:worker AS text)),
        event_seq = jobs.event_seq + :record, last_heartbeat_at = :now, updated_at = :now,
        forwarded_at = CASE WHEN :record = 1 THEN :now ELSE jobs.forwarded_at END
    FROM taken
    WHERE jobs.id = taken.id AND EXISTS (SELECT 1 FROM granted)
    RETURNING jobs.*
),
attempts AS (
    INSERT INTO job_attempts (job_id, attempt, worker, node, pulled_at)
    SELECT id, attempt, worker, node, CAST(:now AS timestamptz) FROM changed
),
events AS ({record_event} RETURNING id, job_id, leased_until)
SELECT claim.retry, CAST(:node AS text) AS claimed_for, j.id, j.upstream_id, j.status, j.environment, j.job_group, j.priority,
    j.spec, j.paths_upload, j.worker, j.node, j.attempt, j.num_retries, j.event_seq,
    j.runtime_details, j.created_at, j.updated_at, j.last_heartbeat_at, j.forwarded_at,
    j.upstream_ok_at, j.wait_notice, e.id AS event_id, e.leased_until AS event_leased_until
FROM (
    SELECT EXISTS (SELECT 1 FROM taken) AND NOT EXISTS (SELECT 1 FROM granted) AS retry
) AS claim
LEFT JOIN (changed j LEFT JOIN events e ON e.job_id = j.id) ON true


-- name: pick_in_queue_order
-- Not a statement: the jobs a claim takes when the worker prefers no group: the first fitting
-- ones in hand-out order. Which plan is best depends on how many queued jobs fit: walk
-- ix_jobs_queued_order and stop at the first :limit when most do, range-scan ix_jobs_queued_fit
-- and sort when few do. {memory_class} in {fitting_for_worker}, the worker's memory rounded up
-- to a power of two, is written in as a constant (the adapter's literal), so that the plan of
-- each class weighs that against the table's statistics (a few dozen statements in all); the
-- exact memory stays a parameter.
SELECT id, 0 AS rank, priority, created_at FROM jobs
WHERE {fitting_for_worker}
ORDER BY priority DESC, created_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED


-- name: pick_preferring_groups
-- Not a statement: the same when the worker prefers groups: their jobs come first, then the rest.
-- (A statement of its own: the preference is a sort key no index holds, and the plan without it
-- must not sort.)
SELECT id, {group_rank} AS rank, priority, created_at FROM jobs
WHERE {fitting_for_worker}
ORDER BY {group_rank}, priority DESC, created_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED


-- name: not_attempted
-- Not a statement: RETRY_DIFFERENT (:exclude_attempted) in the picks and in count_ahead: the job
-- was never pulled by :worker, exact worker identity (JSONB's ?), never a substring.
NOT (CAST(:exclude_attempted AS boolean) AND attempted_by ? CAST(:worker AS text))


-- name: group_rank
-- Not a statement: a job's place by the worker's preferred groups (:groups), 0 when its group is
-- one of them, else 1; the first key of the pull order, in pick_preferring_groups and in
-- count_ahead.
CASE WHEN job_group = ANY(CAST(:groups AS text[])) THEN 0 ELSE 1 END


-- name: record_update
-- A worker's update (common.sql's set_reported_status) with what follows from it, in one
-- statement.
WITH changed AS ({set_reported_status} RETURNING {changed_columns}),
{after_change}


-- name: end_silent_attempt
-- The sweep's end of a silent attempt (common.sql's end_silent_attempt_of_job), likewise.
WITH changed AS ({end_silent_attempt_of_job} RETURNING {changed_columns}),
{after_change}


-- name: retry_failed
-- An operator's retry (common.sql's start_failed_job_over), likewise.
WITH changed AS ({start_failed_job_over} RETURNING {changed_columns}),
{after_change}


-- name: fail_on_operators_word
-- An operator's failing of a job (common.sql's fail_on_operators_word_job), likewise.
WITH changed AS ({fail_on_operators_word_job} RETURNING {changed_columns}),
{after_change}


-- name: in_states
-- Not a statement: "is one of :states" (list_jobs).
= ANY(CAST(:states AS text[]))


-- name: tell_why_waiting
-- Telling a queued job's user why it waits (common.sql's tell_why_waiting_job), likewise.
WITH changed AS ({tell_why_waiting_job} RETURNING {changed_columns}),
{after_change}


-- name: fail_waiting
-- QUEUED_LIMIT's failure of a job no worker can run (common.sql's fail_waiting_job), likewise.
WITH changed AS ({fail_waiting_job} RETURNING {changed_columns}),
{after_change}


-- name: after_change
-- Not a statement: what follows a change (the CTE "changed", one row or none), committed with it:
-- the attempt's outcome, the worker's strikes forgiven, the event. The other parts see the
-- tables as they were before the statement; none of them reads what another writes.
ended AS ({note_outcome}),
forgiven AS ({forgive_strikes}),
forgotten AS ({forget_acknowledged}),
event AS ({record_event} RETURNING id, leased_until)
SELECT changed.*, event.id AS event_id, event.leased_until AS event_leased_until
FROM changed LEFT JOIN event ON true


-- name: if_changed
-- Not a statement: the part of a statement that follows a change runs only if it won.
AND EXISTS (SELECT 1 FROM changed)


-- name: changed_job
-- Not a statement: the job as the change left it, for record_event.
changed


-- name: note_cool_off_ends
-- The cool-offs that ended by :now and were not reported yet, marked reported and read like
-- workers_with_jobs, in one statement: several processes may run it at once, and each end is
-- returned by exactly one of them (a concurrent marking waits for the row, re-reads it marked,
-- and leaves it). The rest of the statement sees the rows as they were before the marking; only
-- aside_end_noted differs, and it is not read.
WITH noted AS (
    UPDATE nodes SET aside_end_noted = true WHERE {cool_off_ends_to_note} RETURNING node
)
{workers_with_jobs}
JOIN noted ON noted.node = w.node
ORDER BY w.account, w.node, j.id;


-- name: in_acknowledged
-- Not a statement: "is one of the events of :acknowledged" (an array of ids; empty for most).
= ANY(CAST(:acknowledged AS bigint[]))


-- name: drop_events_of_jobs
-- The undelivered events of cancelled jobs: nothing more is said upstream about them.
DELETE FROM status_events WHERE job_id = ANY(CAST(:ids AS bigint[]));


-- name: through_active_jobs
-- Not a statement: PostgreSQL's planner finds the partial index of active jobs by itself.


-- name: lease_events
-- Lease due events that head their job's line to this process's dispatcher until :until.
-- FOR UPDATE SKIP LOCKED: dispatchers in several processes take disjoint events without waiting
-- on each other. The ids are chosen once, into an array: as "id IN (…)", a plan made while the
-- outbox was nearly empty ran the choice again for every due event it read (a semi-join), and
-- kept doing so while an outage of the upstream left a backlog (3 000 events: over a minute a
-- lease; now about a millisecond, tests/integration/test_migrations.py).
UPDATE status_events SET leased_until = :until
WHERE id = ANY(ARRAY({deliverable_events} FOR UPDATE SKIP LOCKED))
{leased_events};


-- name: complete_events
-- The upstream took these events: they are forgotten, and each job keeps the time of its latest
-- one as the upstream's latest answer (upstream_ok_at; an older answer never replaces a newer
-- one). Events another deliverer completed meanwhile are gone already and change nothing.
-- Invariant: no deadlock between the completions of several processes, which may touch the
-- same jobs: each locks its job rows in id order before it updates them.
WITH done AS (
    DELETE FROM status_events WHERE id = ANY(CAST(:ids AS bigint[]))
    RETURNING job_id, created_at
),
answered AS (
    SELECT jobs.id, max(done.created_at) AS at
    FROM done JOIN jobs ON jobs.id = done.job_id
    GROUP BY jobs.id
),
locked AS (
    SELECT jobs.id, answered.at FROM jobs JOIN answered ON answered.id = jobs.id
    WHERE jobs.upstream_ok_at IS NULL OR jobs.upstream_ok_at < answered.at
    ORDER BY jobs.id
    FOR NO KEY UPDATE OF jobs
)
UPDATE jobs SET upstream_ok_at = locked.at
FROM locked
WHERE jobs.id = locked.id;


-- name: postpone_events
-- The upstream did not take these events: offered again at :until, by any dispatcher.
UPDATE status_events
SET due_at = :until, leased_until = NULL, attempts = attempts + 1, last_error = :error
WHERE id = ANY(CAST(:ids AS bigint[]));


-- name: pulled_minute
-- Not a statement: the start of the minute of pulled_at, UTC (whatever the session's time zone),
-- for common.sql's throughput.
date_trunc('minute', pulled_at, 'UTC')


-- name: ended_minute
date_trunc('minute', ended_at, 'UTC')


-- name: keep_session
-- A session written (a sign-in, or an answer of a signed-in request), and the expired sessions
-- of anybody removed on the way, so the table holds the live sessions and a few more. Another
-- session than :key only: this statement's write of :key must not meet its own delete.
WITH expired AS (DELETE FROM ui_sessions WHERE expires_at <= :now AND key <> :key)
{write_session};
