-- What only SQLite says. SQLite has one writer at a time, and a statement cannot write two tables
-- (no data-modifying CTEs): what PostgreSQL does in one statement is a script here, several
-- statements that sqlite.py runs in order in one BEGIN IMMEDIATE transaction, which takes the
-- write lock up front (so a claim's pick and its update see the same queue, and a change commits
-- with its event). In a script each statement ends with ';' at the end of its line; the rows of
-- the one statement that returns rows are the answer. Run as a change (Database.change), a
-- script stops after its first statement when that changed no row (a compare-and-set that
-- lost). Id lists are JSON arrays (json_each).


-- name: timestamp_type
-- Not a statement: timestamps are fixed-width UTC text here.
TEXT


-- name: claim_jobs
-- Claim up to {room} fitting jobs for node :node of account :worker, with an attempt row each
-- and, when events are recorded (:record = 1), its 'pulled' event. The jobs come from the first
-- :window queued ones in hand-out order when enough of them fit ({pick_from_head}: when most
-- jobs fit they are there, and nothing needs sorting); otherwise few fit, and {pick_fitting}
-- finds them.
WITH {room_once},
head AS MATERIALIZED ({pick_from_head})
{take_for_worker} (
    SELECT id FROM head WHERE (SELECT count(*) FROM head) = {room}
    UNION ALL
    SELECT id FROM ({pick_fitting}) WHERE (SELECT count(*) FROM head) < {room}
);
{after_claim}


-- name: claim_jobs_preferring_groups
-- The same for a worker that prefers groups (:groups): a preference reorders the queue, so there
-- is no head to look at.
WITH {room_once}
{take_for_worker} ({pick_fitting});
{after_claim}


-- name: room_once
-- Not a statement: how many jobs a claim may take (the CTE "room", counted once): :limit, or
-- fewer so that node :node holds at most :max_held active jobs. Counted in the claim's write
-- transaction: no other claim of the node can commit meanwhile.
room AS MATERIALIZED (SELECT max(0, min(:limit, :max_held - ({held_by_node}))) AS n)


-- name: room
-- Not a statement: that number, where a claim needs it.
(SELECT n FROM room)


-- name: pick_from_head
-- Not a statement: the first fitting jobs among the first :window queued ones in hand-out order
-- (walking ix_jobs_queued_order). {not_attempted} is RETRY_DIFFERENT; {worker_not_set_aside}
-- gives a worker set aside nothing, decided once per claim.
SELECT id
FROM (
    SELECT * FROM jobs INDEXED BY ix_jobs_queued_order
    WHERE status = 'queued'
    ORDER BY priority DESC, created_at, id
    LIMIT :window
) AS head_of_queue
WHERE {fits}
    AND {not_attempted}
    AND {worker_not_set_aside}
ORDER BY priority DESC, created_at, id
LIMIT {room}


-- name: pick_fitting
-- Not a statement: the first fitting jobs in hand-out order, preferred groups (:groups, maybe
-- none) first, found through ix_jobs_queued_fit: a range of the jobs of the worker's environment
-- that need no more memory than it has, then sorted. (The memory class in {fitting_for_worker}
-- is PostgreSQL's hint to its planner; implied by the memory itself, it costs nothing here.)
SELECT id FROM jobs INDEXED BY ix_jobs_queued_fit
WHERE {fitting_for_worker}
ORDER BY {group_rank}, priority DESC, created_at, id
LIMIT {room}


-- name: take_for_worker
-- Not a statement: hand the jobs picked (the list that follows) to node :node of account :worker
-- for their next attempt; counted as an event when events are recorded (:record = 1), which then
-- goes upstream (forwarded_at). The pick runs in this same write transaction, so they are still
-- queued.
UPDATE jobs
SET status = 'pulled', worker = :worker, node = :node, attempt = attempt + 1,
    attempted_by = json_insert(attempted_by, '$[#]', :worker),
    event_seq = event_seq + :record, last_heartbeat_at = :now, updated_at = :now,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE status = 'queued' AND id IN


-- name: after_claim
-- Not a statement: the rest of both claims: the events, the answer, then the attempt rows, which
-- come last because until they are written {claimed_job} tells the jobs this claim took.
{new_event}
FROM jobs c
WHERE :record = 1 AND {claimed_job};
SELECT 0 AS retry, c.*, e.id AS event_id, e.leased_until AS event_leased_until
FROM (SELECT {job_columns} FROM jobs c WHERE {claimed_job}) AS c
LEFT JOIN status_events e
    ON :record = 1 AND e.id = (SELECT max(p.id) FROM status_events p WHERE p.job_id = c.id);
INSERT INTO job_attempts (job_id, attempt, worker, node, pulled_at)
SELECT c.id, c.attempt, c.worker, c.node, :now FROM jobs c WHERE {claimed_job};


-- name: claimed_job
-- Not a statement: a job this claim took (alias c): pulled by :worker, and its attempt has no row
-- yet. Invariant: every attempt of a job gets its row (job_attempts) in the transaction that
-- claims it, so until this claim writes theirs, these are exactly the jobs it took. The status
-- list is the condition of the partial index ix_jobs_active_worker, spelt as there: SQLite uses
-- a partial index only for a query that states its condition (else: a scan of every job).
c.worker = :worker AND c.node = :node
    AND c.status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
    AND c.status = 'pulled'
    AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = c.id AND a.attempt = c.attempt)


-- name: not_attempted
-- Not a statement: RETRY_DIFFERENT (:exclude_attempted) in the picks and in count_ahead: the job
-- was never pulled by :worker, exact worker identity (an element of the JSON array), never a
-- substring.
NOT (:exclude_attempted AND EXISTS (
    SELECT 1 FROM json_each(attempted_by) WHERE json_each.value = :worker
))


-- name: group_rank
-- Not a statement: a job's place by the worker's preferred groups (:groups, maybe none), 0 when
-- its group is one of them, else 1; the first key of the pull order, in pick_fitting and in
-- count_ahead.
CASE WHEN job_group IN (SELECT value FROM json_each(:groups)) THEN 0 ELSE 1 END


-- name: record_update
-- A worker's update (common.sql's set_reported_status) with what follows from it, in one
-- transaction: run as a change, so that nothing follows a compare-and-set that lost.
{set_reported_status};
{after_change}


-- name: end_silent_attempt
{end_silent_attempt_of_job};
{after_change}


-- name: retry_failed
{start_failed_job_over};
{after_change}


-- name: fail_on_operators_word
-- An operator's failing of a job (common.sql's fail_on_operators_word_job), likewise.
{fail_on_operators_word_job};
{after_change}


-- name: in_states
-- Not a statement: "is one of :states" (list_jobs).
IN (SELECT value FROM json_each(:states))


-- name: tell_why_waiting
-- Telling a queued job's user why it waits (common.sql's tell_why_waiting_job), likewise.
{tell_why_waiting_job};
{after_change}


-- name: fail_waiting
-- QUEUED_LIMIT's failure of a job no worker can run (common.sql's fail_waiting_job), likewise.
{fail_waiting_job};
{after_change}


-- name: after_change
-- Not a statement: what follows a change that won: the attempt's outcome, the worker's strikes
-- forgiven, the event, then the answer (the changed columns, with the event just inserted, when
-- one was: the connection's last inserted row).
{note_outcome};
{forgive_strikes};
{forget_acknowledged};
{record_event};
SELECT c.*, e.id AS event_id, e.leased_until AS event_leased_until
FROM (SELECT {changed_columns} FROM jobs WHERE id = :id) AS c
LEFT JOIN status_events e ON :record = 1 AND e.id = last_insert_rowid();


-- name: if_changed
-- Not a statement: nothing to add: a change's script stops when it lost.


-- name: changed_job
-- Not a statement: the job as the change left it, for record_event.
(SELECT * FROM jobs WHERE id = :id)


-- name: note_cool_off_ends
-- The cool-offs that ended by :now and were not reported yet, read like workers_with_jobs, then
-- marked reported, in one write transaction: no other process marks them meanwhile, so each end
-- is returned once.
{workers_with_jobs}
WHERE w.node IN (SELECT node FROM nodes WHERE {cool_off_ends_to_note})
ORDER BY w.account, w.node, j.id;
UPDATE nodes SET aside_end_noted = true WHERE {cool_off_ends_to_note};


-- name: in_acknowledged
-- Not a statement: "is one of the events of :acknowledged" (a JSON array of ids).
IN (SELECT value FROM json_each(:acknowledged))


-- name: drop_events_of_jobs
-- The undelivered events of cancelled jobs: nothing more is said upstream about them.
DELETE FROM status_events WHERE job_id IN (SELECT value FROM json_each(:ids));


-- name: through_active_jobs
-- Not a statement: find_expired reads the active jobs through their partial index; SQLite's
-- planner, weighing the whole table's statistics, would rather scan every job.
INDEXED BY ix_jobs_active_worker


-- name: lease_events
-- Lease due events that head their job's line to this process's dispatcher until :until. The
-- write lock, taken up front, already keeps other dispatchers out.
UPDATE status_events SET leased_until = :until
WHERE id IN ({deliverable_events})
{leased_events};


-- name: complete_events
-- The upstream took these events: each job keeps the time of its latest one as the upstream's
-- latest answer (upstream_ok_at; an older answer never replaces a newer one), then they are
-- forgotten. Events another deliverer completed meanwhile are gone already and change nothing.
UPDATE jobs SET upstream_ok_at = answered.at
FROM (
    SELECT job_id, max(created_at) AS at FROM status_events
    WHERE id IN (SELECT value FROM json_each(:ids))
    GROUP BY job_id
) AS answered
WHERE jobs.id = answered.job_id
    AND (jobs.upstream_ok_at IS NULL OR jobs.upstream_ok_at < answered.at);
DELETE FROM status_events WHERE id IN (SELECT value FROM json_each(:ids));


-- name: postpone_events
-- The upstream did not take these events: offered again at :until.
UPDATE status_events
SET due_at = :until, leased_until = NULL, attempts = attempts + 1, last_error = :error
WHERE id IN (SELECT value FROM json_each(:ids));


-- name: pulled_minute
-- Not a statement: the minute of pulled_at (fixed-width UTC text) as 'YYYY-MM-DD HH:MM', for
-- common.sql's throughput; rows.minute_from reads it back.
substr(pulled_at, 1, 16)


-- name: ended_minute
substr(ended_at, 1, 16)


-- name: keep_session
-- A session written (a sign-in, or an answer of a signed-in request), and the expired sessions
-- of anybody removed on the way, so the table holds the live sessions and a few more.
DELETE FROM ui_sessions WHERE expires_at <= :now AND key <> :key;
{write_session};
