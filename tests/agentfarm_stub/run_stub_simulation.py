"""Runs the stand-in's simulation the way AgentFarm's run_simulation.py does, restarting
itself first unless PYTHONHASHSEED is 0."""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse  # noqa: E402

from farm.config import SimulationConfig  # noqa: E402
from farm.core.simulation import run_simulation  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--in-memory", action="store_true")
parser.add_argument("--simulation-id", default="sim_cli")
args = parser.parse_args()
config = SimulationConfig()
config.database.use_in_memory_db = args.in_memory
environment = run_simulation(args.steps, config, path=os.path.join(os.getcwd(), "runs"), simulation_id=args.simulation_id)
print(f"{type(environment.db).__name__} {environment.time}")
