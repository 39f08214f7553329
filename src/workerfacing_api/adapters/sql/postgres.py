"""The queue's database on PostgreSQL (production, several API processes), straight on asyncpg
and its connection pool.

Each operation is one statement (``queries/postgres.sql`` and ``queries/common.sql``), run
without an explicit transaction: PostgreSQL runs a statement atomically, data-modifying CTEs
included, so a change, its attempt's outcome and its status event commit together in one round
trip. (Through SQLAlchemy's execution layer the same statements cost this service about five
times the CPU; SQLAlchemy still defines the schema and drives the migrations.) Only a submission
and a cancellation, which are rare, take a transaction of a few statements.

Changes and claims that requests make at the same time commit together (``Groups``): those
that arrive while a group is in flight go as the next groups, each in one round trip and one
transaction (asyncpg's ``fetchmany``), so that under load a commit, the costliest part of a
change, is shared by many; alone, a change goes at once as before.

A lost connection (the server restarted, failed over or ended it) is reported as
``Unavailable``, which workers see as a 503 they retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from workerfacing_api.adapters.sql import database, queries
from workerfacing_api.adapters.sql.database import Conflict, Literals, OnConnection, Row, Session
from workerfacing_api.core.errors import Unavailable

T = TypeVar("T")

# How PostgreSQL plans this service's statements, set on each of its connections. Measured side
# by side (docs/PERFORMANCE.md, "One adapter per port"), these keep about a quarter of the job
# cycles per second: without them PostgreSQL spent 2.3 ms of CPU per cycle, with them 1.4 ms.
PLANNER_SETTINGS = {
    # Plan each statement once per connection, not at every execution: planning costs
    # PostgreSQL more than running these statements, and with the default ("auto") it went on
    # planning most of them anew. The one statement whose best plan depends on its values, the
    # claim, carries them as literals (its memory class, see postgres.sql).
    "plan_cache_mode": "force_generic_plan",
    # A plan made while a table is nearly empty (a new queue, a drained outbox) would scan it,
    # and be kept while it grows or fills with dead rows (the outbox churns): every statement
    # here has an index to take.
    "enable_seqscan": "off",
    # With seq scans off, the cost of a statement over a table with no index to take (the count
    # of an empty outbox) looks huge and crossed jit_above_cost: 30 ms of compiling for a count
    # of nothing. These statements run in milliseconds.
    "jit": "off",
}

# ":name", but not the "::type" of a cast.
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)")


@functools.cache
def numbered(name: str, literals: Literals) -> tuple[str, tuple[str, ...]]:
    """The statement for asyncpg: literals written in, parameters numbered ($1…) once each."""
    sql = queries.load("postgres")[name].text(dict(literals))
    if re.search(r";\s*\n", sql):
        raise ValueError(f"{name}: PostgreSQL runs one statement, not a script")
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PARAMETER.sub(number, sql), tuple(names)


def _arguments(names: tuple[str, ...], params: Mapping[str, Any]) -> list[Any]:
    return [database.text_safe(params[name]) for name in names]


# The connection is gone: the server ended it (restart, failover, pg_terminate_backend, idle
# timeout), refused it, is starting up or shutting down (57P03), or did not answer the connect
# in time. The statement then did not commit, except in the rare case of a connection lost
# after the commit and before its answer: at least once, as everywhere here.
_LOST = (
    OSError,  # refused, reset, unreachable; also the connect timeout (TimeoutError)
    asyncpg.PostgresConnectionError,  # 08xxx, e.g. "connection was closed in the middle of …"
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)
_DEADLOCK_RETRIES = 3


def _lost(conn: asyncpg.Connection) -> bool:
    """Whether ``conn``'s connection to the server is gone. The pool detaches its proxy from a
    connection that broke mid-transaction; asking the proxy then raises (seen while the server
    shut down under load), which says the same."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"lost the connection to the queue's database ({exc}); retry")


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Nothing to reset on a returned connection: every operation here is one statement or a
    transaction that ends, and nothing sets session state, so asyncpg's reset query (another
    round trip per operation) would find nothing to undo."""


async def _fetch(
    conn: asyncpg.Connection, name: str, literals: Literals, params: Mapping[str, Any], _: bool
) -> list[Row]:
    """One statement on ``conn`` (a change is one statement too: see the class)."""
    sql, names = numbered(name, literals)
    rows: list[Row] = await conn.fetch(sql, *_arguments(names, params))
    return rows


# The statements run in groups, besides the changes (``Statements.change``, each of one job, keyed
# by its id): the claims, each for one node, whose rows say which node they answer (claimed_for).
_CLAIMS = frozenset({"claim_jobs", "claim_jobs_preferring_groups"})


GROUPS_TASK = "queue-groups"  # the name of the task that runs a process's groups


@dataclass(slots=True)
class _Request:
    key: Any  # the job (a change) or the node (a claim) whose rows lock first
    args: list[Any]
    answer: asyncio.Future[list[Row]]


class Groups:
    """Runs a statement for many requests in one round trip and one transaction: group commit.

    A process runs one group at a time. A request that finds none in flight starts one at the
    loop's next turn, with every request that arrived by then; those that arrive while a group
    is in flight wait for it, and the next group takes those of the statement that has waited
    longest (asyncpg's ``fetchmany``: one Bind/Execute per request, one Sync, so one implicit
    transaction and one durable commit). Nothing waits for company: alone, a request goes at
    once; under load commits, round trips and connections are shared by as many requests as
    arrived during a group.

    Each request keeps the outcome it would have had alone:
    - rows are told apart by ``key`` (a change's job id, a claim's node): two requests of one
      key never share a group (the later one goes with a later group, in arrival order), and
      each is answered with the rows that carry its key (``column``);
    - a group's requests run in the order of their keys, so that groups in several processes
      lock rows in the same order (a deadlock PostgreSQL still breaks runs the group again);
    - a group is all or nothing: when a statement of it fails, nothing of the group was
      written, and its requests run again one by one, each meeting its own error;
    - a lost connection is ``Unavailable`` for the whole group, as for one statement (its
      commit may have happened: at least once, as everywhere here);
    - a request whose caller stopped waiting still runs with its group.
    """

    def __init__(
        self,
        run: Callable[[Callable[[asyncpg.Connection], Awaitable[list[Row]]]], Awaitable[list[Row]]],
    ) -> None:
        self._run = run
        # What waits, by statement (with the column that names a row's key), longest first.
        self._waiting: dict[str, tuple[str, list[_Request]]] = {}
        self._runner: asyncio.Task[None] | None = None  # runs the groups while any wait

    async def rows(self, sql: str, key: Any, args: list[Any], column: str) -> list[Row]:
        loop = asyncio.get_running_loop()
        request = _Request(key, args, loop.create_future())
        self._waiting.setdefault(sql, (column, []))[1].append(request)
        if self._runner is None:
            self._runner = loop.create_task(self._groups(), name=GROUPS_TASK)
            self._runner.add_done_callback(self._cancelled_unstarted)
        return await request.answer

    def _cancelled_unstarted(self, runner: asyncio.Task[None]) -> None:
        """A runner cancelled before it began (at shutdown) ran none of ``_groups``: what waits
        for it is cancelled too, and the next request starts a runner again."""
        if self._runner is runner:
            self._runner = None
            self._end_waiting(asyncio.CancelledError())

    def _end_waiting(self, outcome: BaseException) -> None:
        """Every waiting request ends with ``outcome``: the runner is gone."""
        for _, waiting in self._waiting.values():
            for request in waiting:
                _answer(request, outcome)
        self._waiting.clear()

    async def _groups(self) -> None:
        """One group after the other, each of the statement that waited longest, until none
        waits."""
        group: list[_Request] = []
        try:
            while self._waiting:
                sql = next(iter(self._waiting))
                column, waiting = self._waiting.pop(sql)
                group, later = _one_per_key(waiting)
                if later:  # behind the other statements now
                    self._waiting[sql] = (column, later)
                await self._one(sql, column, group)
        except BaseException as exc:  # cancelled at shutdown: nobody is left waiting
            for request in group:
                _answer(request, exc)
            self._end_waiting(exc)
            raise
        finally:
            self._runner = None

    async def _one(self, sql: str, column: str, group: list[_Request]) -> None:
        if len(group) == 1:
            await self._alone(sql, group[0])
            return
        group.sort(key=lambda request: request.key)
        try:
            rows: list[Row] = await self._run(
                lambda conn: conn.fetchmany(sql, [request.args for request in group])
            )
        except Unavailable as exc:
            for request in group:
                _answer(request, exc)
            return
        except Exception:  # nothing of the group was written: each on its own, for its error
            for request in group:
                await self._alone(sql, request)
            return
        answers: dict[Any, list[Row]] = {request.key: [] for request in group}
        for row in rows:
            answers[row[column]].append(row)
        for request in group:
            _answer(request, answers[request.key])

    async def _alone(self, sql: str, request: _Request) -> None:
        try:
            rows: list[Row] = await self._run(lambda conn: conn.fetch(sql, *request.args))
        except Exception as exc:
            _answer(request, exc)
        else:
            _answer(request, rows)


def _one_per_key(requests: list[_Request]) -> tuple[list[_Request], list[_Request]]:
    """The first request of each key in ``requests``, and the others (in arrival order)."""
    group: dict[Any, _Request] = {}
    later: list[_Request] = []
    for request in requests:
        if request.key in group:
            later.append(request)
        else:
            group[request.key] = request
    return list(group.values()), later


def _answer(request: _Request, outcome: list[Row] | BaseException) -> None:
    if request.answer.done():  # its caller stopped waiting
        return
    if isinstance(outcome, asyncio.CancelledError):
        request.answer.cancel()
    elif isinstance(outcome, BaseException):
        request.answer.set_exception(outcome)
    else:
        request.answer.set_result(outcome)


class PostgresDatabase(database.Statements):
    """Implements ``database.Database`` on a pool of asyncpg connections, made by ``open`` (or
    the first statement) in the event loop that uses it (asyncpg binds a pool to its loop). A
    change is one statement: a compare-and-set that lost returns no row, its CTEs wrote
    nothing."""

    dialect = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        connect_timeout: float = 10.0,
        max_queries: int = 20_000,
        max_idle_seconds: float = 60.0,
    ) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool_options: dict[str, Any] = {
            "min_size": 0,  # none opened before use, and no floor kept up in the background
            "max_size": pool_size,
            "timeout": connect_timeout,
            # A bounded life: a connection is replaced after this many statements, and closed
            # after sitting idle this long (before a firewall or the server's idle timeout
            # cuts it silently).
            "max_queries": max_queries,
            "max_inactive_connection_lifetime": max_idle_seconds,
            "reset": _no_reset,
            # Each connection prepares a statement once and keeps it: the claim comes in one
            # variant per memory class and group preference, the others once each.
            "statement_cache_size": 256,
            "server_settings": {"application_name": "workerfacing-api", **PLANNER_SETTINGS},
        }
        self._pool: asyncpg.Pool | None = None
        self._groups = Groups(self._run)
        self._opening = asyncio.Lock()
        self._closed = False

    async def open(self) -> None:
        await self._open_pool()  # with min_size 0: no connection before the first statement

    async def _open_pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._closed:
                raise Unavailable("the queue is closed (the service is shutting down); retry")
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self._dsn, **self._pool_options)
            return self._pool

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` on a pooled connection, with a lost connection reported as ``Unavailable``
        and a unique index's refusal as ``Conflict``.

        ``work`` runs again when it cannot have changed anything: on another connection when
        its connection turned out broken before anything was sent, and when PostgreSQL aborted
        it to break a deadlock."""
        pool = self._pool if self._pool is not None else await self._open_pool()
        broken = deadlocks = 0
        while True:
            try:
                async with pool.acquire() as conn:
                    try:
                        return await work(conn)
                    except asyncpg.InternalClientError as exc:
                        # asyncpg found the connection's protocol out of step and sent nothing:
                        # the server ended the connection while it sat idle in the pool (its
                        # farewell was read, the socket is not closed yet). Such a connection is
                        # dropped, so this ends once each pooled connection was tried at most
                        # once, and then on a new one.
                        conn.terminate()
                        broken += 1
                        if broken > self._pool_size:
                            raise _unavailable(exc) from exc
                        continue
                    except asyncpg.InterfaceError as exc:
                        if _lost(conn):
                            raise _unavailable(exc) from exc
                        raise  # a misuse of asyncpg: a bug, not an outage
            except asyncpg.exceptions.DeadlockDetectedError:
                deadlocks += 1
                if deadlocks == _DEADLOCK_RETRIES:
                    raise
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from exc
            except _LOST as exc:
                raise _unavailable(exc) from exc

    async def _rows(
        self, name: str, literals: Literals, params: Mapping[str, Any], *, change: bool
    ) -> list[Row]:
        if change or name in _CLAIMS:
            sql, names = numbered(name, literals)
            key, column = ("id", "id") if change else ("node", "claimed_for")
            return await self._groups.rows(sql, params[key], _arguments(names, params), column)
        return await self._run(lambda conn: _fetch(conn, name, literals, params, change))

    async def transaction(self, work: Callable[[Session], Awaitable[T]]) -> T:
        async def in_transaction(conn: asyncpg.Connection) -> T:
            async with conn.transaction():
                return await work(OnConnection(functools.partial(_fetch, conn)))

        return await self._run(in_transaction)

    async def schema_revision(self) -> str | None:
        try:
            row = await self.fetch_one("schema_revision")
        except asyncpg.UndefinedTableError:
            return None  # never migrated: no alembic_version table
        return None if row is None else str(row["version_num"])

    def connections(self) -> tuple[int, int]:
        if self._pool is None:
            return 0, 0
        idle = self._pool.get_idle_size()
        return self._pool.get_size() - idle, idle

    async def close(self) -> None:
        async with self._opening:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(TimeoutError):
                # Waits for connections in use; past the bound, asyncpg terminates them all.
                await asyncio.wait_for(pool.close(), timeout=10)
