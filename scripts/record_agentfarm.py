#!/usr/bin/env python3
"""Run AgentFarm's own simulation with and without farm-merge, compare, and record the fixture.

Needs an AgentFarm checkout and a Python that can run it (torch, numpy, ...), with this
checkout's farm-merge importable, e.g.::

    PYTHONPATH=. /path/to/agentfarm-venv/bin/python scripts/record_agentfarm.py --agentfarm /path/to/AgentFarm

Run A is AgentFarm's ``run_simulation`` unmodified, into its own per-run SQLite file; run B
is the same seed with farm-merge installed (``farm_merge.agentfarm.install``), logging into
an experiment database, with every attribute AgentFarm touches on the database object and
its logger recorded.  The script then compares, table by table, B's simulation with A's
file as AgentFarm wrote it and with A's file merged by ``farm-merge merge``; ``--prove``
also splits B back into a run file and reads it with AgentFarm's own reading code
(repositories, validation) beside A's file, and runs two simulations (seeds SEED and
SEED+1) into one file through AgentFarm's own ``ExperimentDatabase`` and merges that file,
checking that every simulation and row arrives.  It writes the recording and A's per-table
digests to ``tests/data/agentfarm/`` (see ``tests/agentfarm_fixture.py``), which the replay
test checks in CI, where AgentFarm is not installed.  Nothing of AgentFarm's code is copied.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import agentfarm_fixture as fixture  # noqa: E402  (tests/agentfarm_fixture.py)

SIMULATION_ID = fixture.RECORDED_SIMULATION_ID
#: The simulations run into one file through AgentFarm's own ExperimentDatabase (``--prove``).
EXPERIMENT_RUNS = ("sim_a", "sim_b")
#: Where an upgrade puts the rows of that file that belong to no one simulation.
CONFIG_SIMULATION = "agentfarm_experiment_config"
EXPERIMENT_ID = "agentfarm_replay"
#: Columns whose values AgentFarm itself does not repeat from run to run with one seed:
#: a Python object's id(), wall-clock times, and the serial ids of health incidents (AgentFarm
#: writes a death's at once and buffers the others until a flush whose moment depends on the
#: clock, so their order, hence their ids, vary on runs longer than about 100 steps).
IGNORED = {"agent_actions": ["module_id"], "simulation_config": ["timestamp"], "interactions": ["timestamp"],
           "reproduction_events": ["timestamp"], "health_incidents": ["incident_id"]}


# --- the child: one run of AgentFarm ----------------------------------------------------------

class Recorder:
    """Records every attribute AgentFarm touches on one object (the database, its logger)."""

    def __init__(self, paths: dict[str, str]):
        self.paths = paths
        self.records: list[list] = []
        self.counts: collections.Counter = collections.Counter()
        self.arguments: dict[str, dict[str, set]] = collections.defaultdict(lambda: collections.defaultdict(set))
        self.logger_read = False

    def add(self, target: str, name: str, kind: str, args=(), kwargs=None, result=None) -> None:
        self.counts[f"{target}.{name}"] += 1
        if (target, name, kind) == ("db", "logger", "get"):
            if self.logger_read:
                return  # read before nearly every logger call: once is enough to replay
            self.logger_read = True
        self.records.append([target, name, kind, fixture.encode(list(args), self.paths),
                             fixture.encode(kwargs or {}, self.paths), fixture.encode(result, self.paths)])

    def wrap(self, obj, target: str):
        recorder = self

        class Proxy:
            def __getattr__(self, name):
                try:
                    value = getattr(obj, name)
                except AttributeError:
                    recorder.add(target, name, "missing")
                    raise
                if name == "logger" and target == "db":
                    recorder.add(target, name, "get")
                    return recorder.wrap(value, "logger")
                if not callable(value) or isinstance(value, type):
                    recorder.add(target, name, "get", result=value)
                    return value

                def call(*args, **kwargs):
                    try:
                        bound = inspect.signature(value).bind_partial(*args, **kwargs).arguments
                    except (TypeError, ValueError):
                        bound = {f"#{i}": a for i, a in enumerate(args)} | kwargs
                    for argument, given in bound.items():
                        recorder.arguments[f"{target}.{name}"][argument].add(type(given).__name__)
                    try:
                        result = value(*args, **kwargs)
                    except Exception as e:
                        recorder.add(target, name, "call", args, kwargs, {"$raised": type(e).__name__})
                        raise
                    recorder.add(target, name, "call", args, kwargs, result)
                    return result

                return call

            def __setattr__(self, name, value):
                recorder.add(target, name, "set", result=value)
                setattr(obj, name, value)

            def __bool__(self):
                return True

        return Proxy()


def agentfarm_config(args: argparse.Namespace):
    from farm.config import SimulationConfig

    config = SimulationConfig.from_centralized_config(environment="development")
    config.population.system_agents, config.population.independent_agents, config.population.control_agents = (
        int(n) for n in args.agents.split(","))
    config.database.use_in_memory_db = False  # development's default keeps nothing on disk
    return config


def run_child(args: argparse.Namespace) -> None:
    """One run of AgentFarm's ``run_simulation``, in its checkout (its configs are relative)."""
    os.chdir(args.agentfarm)
    sys.path.insert(0, str(args.agentfarm))
    import farm.core.simulation as simulation
    import farm.database.utilities as utilities

    config = agentfarm_config(args)
    out = Path(args.out)
    recorder = None
    if args.mode == "farm-merge":
        from farm_merge import agentfarm

        agentfarm.install(experiment_id=EXPERIMENT_ID, db_path=str(out / "experiment.db"))
        recorder = Recorder({"db": str(out / "experiment.db"), "run": str(out / f"simulation_{SIMULATION_ID}.db")})
        installed = utilities.setup_db

        def setup_db(db_path, simulation_id, parameters=None):
            recorder.add("factory", "setup_db", "call", (db_path, simulation_id, parameters))
            return recorder.wrap(installed(db_path, simulation_id, parameters), "db")

        utilities.setup_db = setup_db
    started = time.perf_counter()
    simulation.run_simulation(num_steps=args.steps, config=config, path=str(out), save_config=True, seed=args.seed,
                              simulation_id=SIMULATION_ID, disable_console_logging=True)
    result = {"seconds": time.perf_counter() - started}
    if recorder is not None:
        count = fixture.write_calls(out / "calls.jsonl.gz", recorder.records)
        result.update(records=count, counts=dict(recorder.counts),
                      arguments={k: {a: sorted(t) for a, t in v.items()} for k, v in recorder.arguments.items()})
    (out / "result.json").write_text(json.dumps(result, indent=1))


# --- the parent: both runs, the comparison, the fixture ----------------------------------------

def run(args: argparse.Namespace, mode: str, out: Path) -> dict:
    out.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", mode, "--out", str(out), "--agentfarm", str(args.agentfarm),
               "--seed", str(args.seed), "--steps", str(args.steps), "--agents", args.agents]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    print(f"run {mode}: AgentFarm's run_simulation, seed {args.seed}, {args.steps} steps, agents {args.agents} ...",
          file=sys.stderr)
    with open(out / "run.log", "w") as log:  # AgentFarm's progress bar and warnings
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"run {mode} failed:\n" + (out / "run.log").read_text()[-3000:])
    return json.loads((out / "result.json").read_text())


def digests_of(target: str, *, simulation_id: str | None = None, columns=None) -> dict:
    from farm_merge.storage import db

    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            return fixture.table_digests(conn, IGNORED, simulation_id=simulation_id, columns=columns)
    finally:
        engine.dispose()


def compare(label: str, expected: dict, got: dict) -> bool:
    same = True
    print(f"\n{label}\n{'table':<20} {'rows A':>8} {'rows':>8}  values")
    for table, want in expected.items():
        have = got.get(table, {"rows": 0, "digest": None})
        equal = have["rows"] == want["rows"] and have["digest"] == want["digest"]
        same &= equal
        print(f"{table:<20} {want['rows']:>8} {have['rows']:>8}  {'equal' if equal else 'DIFFERENT'}")
    return same


def commit_of(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentfarm", type=Path, required=True, help="an AgentFarm checkout")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--agents", default="4,3,3", help="system,independent,control agents")
    parser.add_argument("--output", type=Path, default=fixture.DATA, help="where the fixture goes")
    parser.add_argument("--prove", action="store_true", help="also split run B and read it with AgentFarm's code")
    parser.add_argument("--child", choices=["native", "farm-merge", "read", "experiment"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.agentfarm = args.agentfarm.resolve()
    if args.child:
        args.mode = args.child
        {"read": read_child, "experiment": experiment_child}.get(args.child, run_child)(args)
        return

    from farm_merge import merge

    with tempfile.TemporaryDirectory(prefix="farm-merge-agentfarm-") as tmp:
        work = Path(tmp)
        a = run(args, "native", work / "A")
        b = run(args, "farm-merge", work / "B")
        run_file = work / "A" / f"simulation_{SIMULATION_ID}.db"
        tables = digests_of(str(run_file))
        columns = {t: d["columns"] for t, d in tables.items()}
        logged = digests_of(str(work / "B" / "experiment.db"), simulation_id=SIMULATION_ID, columns=columns)
        report = merge([str(run_file)], str(work / "merged.db"), progress=False)
        merged = digests_of(str(work / "merged.db"), simulation_id=report.merged[0].simulation_ids[0],
                            columns=columns)
        ok = compare("B (logged through farm-merge) against A (AgentFarm's own file):", tables, logged)
        ok &= compare("A merged by farm-merge against A:", tables, merged)
        if args.prove:
            ok &= prove(args, work, run_file)
            ok &= prove_experiment_file(args, work)
        if not ok:
            raise SystemExit("run B differs from run A: not recording")
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "calls.jsonl.gz").write_bytes((work / "B" / "calls.jsonl.gz").read_bytes())
        expected = {
            "agentfarm_commit": commit_of(args.agentfarm),
            "run": {"entry_point": "farm.core.simulation.run_simulation", "environment": "development",
                    "seed": args.seed, "steps": args.steps, "agents": args.agents, "simulation_id": SIMULATION_ID,
                    "use_in_memory_db": False, "seconds_A": round(a["seconds"], 1),
                    "seconds_B": round(b["seconds"], 1)},
            "ignored_columns": IGNORED,
            "tables": tables,
            "records": b["records"],
            "calls": dict(sorted(b["counts"].items())),
            "arguments": dict(sorted(b["arguments"].items())),
        }
        (args.output / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        size = (args.output / "calls.jsonl.gz").stat().st_size
        print(f"\nwrote {args.output}/calls.jsonl.gz ({b['records']} records, {size / 1024:.0f} KiB) and expected.json "
              f"(AgentFarm {expected['agentfarm_commit'][:8]})")


def prove(args: argparse.Namespace, work: Path, run_file: Path) -> bool:
    """Split B back into a run file and read it and A's file with AgentFarm's own code."""
    from farm_merge import ExperimentQueryTool

    with ExperimentQueryTool(str(work / "B" / "experiment.db")) as tool:
        tool.split(str(work / "split"), simulation_ids=[SIMULATION_ID])
    read = {}
    for label, path in (("A", run_file), ("split", work / "split" / f"{SIMULATION_ID}.db")):
        out = work / f"read_{label}.json"
        subprocess.run([sys.executable, __file__, "--child", "read", "--out", str(out), "--agentfarm",
                        str(args.agentfarm), "--file", str(path)], check=True, stdout=subprocess.DEVNULL)
        read[label] = json.loads(out.read_text())
    print("\nB split back into a run file, read by AgentFarm's own code beside A's file:")
    same = True
    for name, value in read["A"].items():
        equal = value == read["split"].get(name)
        same &= equal
        shown = "same" if equal else "DIFFERENT"
        if isinstance(value, dict) and "error" in value:
            shown += f" (both: {value['error'][:70]})" if equal else ""
        print(f"  {name:<52} {shown}")
    return same


def experiment_child(args: argparse.Namespace) -> None:
    """Two runs of ``run_simulation`` into one file through AgentFarm's own ``ExperimentDatabase``.

    AgentFarm has no runner for it: its ``SimulationContext`` has the logger but none of the
    rest ``run_simulation`` calls on a database (``save_configuration``,
    ``update_simulation_record``, ``update_agent_death``, ...), so those go to the
    ``ExperimentDatabase`` the context belongs to, as AgentFarm's classes write them."""
    os.chdir(args.agentfarm)
    sys.path.insert(0, str(args.agentfarm))
    import farm.core.simulation as simulation
    import farm.database.utilities as utilities
    from farm.database.experiment_database import ExperimentDatabase

    experiment = ExperimentDatabase(str(Path(args.out) / "experiment.db"), experiment_id=EXPERIMENT_ID)

    class InExperiment:
        def __init__(self, context):
            self.context = context
            self.logger = context.logger

        def close(self):
            self.context.close()  # flushes; the experiment file stays open for the next run

        def __getattr__(self, name):
            return getattr(self.context.parent_db, name)

    utilities.setup_db = lambda db_path, simulation_id, parameters=None: InExperiment(
        experiment.create_simulation_context(simulation_id, parameters))
    for i, simulation_id in enumerate(EXPERIMENT_RUNS):
        simulation.run_simulation(num_steps=args.steps, config=agentfarm_config(args), path=args.out,
                                  seed=args.seed + i, simulation_id=simulation_id, disable_console_logging=True,
                                  save_config=True)
    experiment.close()
    (Path(args.out) / "result.json").write_text("{}")


def prove_experiment_file(args: argparse.Namespace, work: Path) -> bool:
    """Merge the file of AgentFarm's own ``ExperimentDatabase``: every simulation and row arrives."""
    import shutil
    import sqlite3

    from farm_merge import merge
    from farm_merge.consolidate import inplace

    run(args, "experiment", work / "E")
    source = work / "E" / "experiment.db"
    print("\ntwo simulations through AgentFarm's own ExperimentDatabase into one file, merged:")
    report = merge([str(source)], str(work / "E_merged.db"), progress=False)
    if report.failed:
        # Its save_configuration writes the configuration without a simulation_id, which
        # the merge will not guess; the README's answer is to upgrade a copy first.
        print(f"  merge: {report.failed[0].reason}")
        copy = work / "E" / "experiment_copy.db"
        shutil.copyfile(source, copy)
        upgraded = inplace.upgrade(copy, simulation_id=CONFIG_SIMULATION, backup=False)
        print(f"  upgrade of a copy with --simulation-id {CONFIG_SIMULATION}: "
              f"{sum(upgraded.rows.values()):,} rows kept")
        report = merge([str(copy)], str(work / "E_merged.db"), progress=False)
    con = sqlite3.connect(source)
    merged = sqlite3.connect(work / "E_merged.db")
    tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if t in fixture.DIGESTED_TABLES]
    arrived = sorted(report.merged[0].simulation_ids) if report.merged else []
    print(f"  merged simulations: {', '.join(arrived) or 'none'}")
    print(f"{'table':<20} " + " ".join(f"{s + ' file':>12} {'merged':>7}" for s in EXPERIMENT_RUNS)
          + f" {'all file':>9} {'merged':>7}")
    same = set(EXPERIMENT_RUNS) <= set(arrived)
    for table in tables:
        columns = {c for (_, c, *_) in con.execute(f"PRAGMA table_info({table})")}
        cells = []
        for sim in EXPERIMENT_RUNS:
            # The file's own rows of the simulation, and those AgentFarm left without an id
            # (a death's health incident) that name one of its agents.
            where = "simulation_id = ?"
            if "agent_id" in columns and table != "agents":
                where += (" OR (simulation_id IS NULL"
                          " AND agent_id IN (SELECT agent_id FROM agents WHERE simulation_id = ?))")
            want = con.execute(f"SELECT count(*) FROM {table} WHERE {where}", (sim,) * where.count("?")).fetchone()[0]
            have = merged.execute(f"SELECT count(*) FROM {table} WHERE simulation_id = ?", (sim,)).fetchone()[0]
            same &= want == have
            cells.append(f"{want:>12} {have:>7}")
        total, merged_total = (c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for c in (con, merged))
        same &= total == merged_total
        print(f"{table:<20} " + " ".join(cells) + f" {total:>9} {merged_total:>7}")
    con.close()
    merged.close()
    print("every simulation and row arrived" if same else "ROWS DIFFER")
    return same


def read_child(args: argparse.Namespace) -> None:
    """What AgentFarm's repositories, validation and SimulationDatabase read from one run file,
    in a form that compares (lists as sorted multisets: rows come back in key order)."""
    os.chdir(args.agentfarm)
    sys.path.insert(0, str(args.agentfarm))
    from farm.database.database import SimulationDatabase
    from farm.database.repositories.action_repository import ActionRepository
    from farm.database.repositories.agent_repository import AgentRepository
    from farm.database.repositories.population_repository import PopulationRepository
    from farm.database.repositories.resource_repository import ResourceRepository
    from farm.database.repositories.simulation_repository import SimulationRepository
    from farm.database.session_manager import SessionManager
    from farm.database.validation import validate_simulation_database

    manager = SessionManager(f"sqlite:///{args.file}")
    agents, actions = AgentRepository(manager), ActionRepository(manager)
    population, resources = PopulationRepository(manager), ResourceRepository(manager)
    simulation = SimulationRepository(manager)
    ids = sorted(a.agent_id for a in population.get_all_agents())

    def sim_db():
        handle = SimulationDatabase(str(args.file), simulation_id=SIMULATION_ID)
        try:
            counts = {t: handle.get_table_row_count(t) for t in fixture.DIGESTED_TABLES[:7]}
            return {"rows": counts, "configuration": handle.get_configuration()}
        finally:
            handle.close()

    def validation():
        report = validate_simulation_database(str(args.file), simulation_id=SIMULATION_ID)
        return {"clean": report.is_clean(), "errors": report.error_count, "warnings": report.warning_count}

    readers = {
        "AgentRepository.get_agent_info (every agent)": lambda: [agents.get_agent_info(a) for a in ids],
        "AgentRepository.get_states_by_agent_id (first 3)": lambda: [agents.get_states_by_agent_id(a) for a in ids[:3]],
        "AgentRepository.get_agent_current_stats (every agent)": lambda: [agents.get_agent_current_stats(a)
                                                                          for a in ids],
        "AgentRepository.get_action_statistics": agents.get_action_statistics,
        "ActionRepository.get_actions_by_scope(simulation)": lambda: actions.get_actions_by_scope("simulation"),
        "ResourceRepository.get_resource_positions_over_time": resources.get_resource_positions_over_time,
        "PopulationRepository.get_population_over_time": population.get_population_over_time,
        "PopulationRepository.get_all_agents": population.get_all_agents,
        "SimulationRepository.agent_states()": simulation.agent_states,
        "validation.validate_simulation_database": validation,
        "SimulationDatabase row counts, configuration": sim_db,
    }
    out = {}
    for name, reader in readers.items():
        try:
            out[name] = plain(reader())
        except Exception as e:  # a reader that fails on both files is AgentFarm's
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    Path(args.out).write_text(json.dumps(out, default=str))


#: Values AgentFarm itself does not repeat (see IGNORED), left out when comparing what it reads.
_UNREPEATED = {"module_id", "timestamp", "start_time", "end_time", "db_path", "simulation_db_path"}


def plain(value, depth: int = 0):
    if depth > 8:
        return repr(value)
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items() if str(k) not in _UNREPEATED}
    if isinstance(value, (list, tuple, set)):
        return sorted((plain(v, depth + 1) for v in value), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(value, float):
        return round(value, 9)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    for attribute in ("model_dump", "_asdict", "to_dict"):
        if callable(getattr(value, attribute, None)):
            return plain(getattr(value, attribute)(), depth + 1)
    if hasattr(value, "__table__"):  # an ORM object
        return plain({c.name: getattr(value, c.key, None) for c in value.__table__.columns}, depth + 1)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "__dict__"):
        return plain({k: v for k, v in vars(value).items() if not k.startswith("_")}, depth + 1)
    return repr(value)


if __name__ == "__main__":
    main()
