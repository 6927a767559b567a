"""The GPU ledger: which devices a new run may take, given reservations, foreign load and policies.

Pure functions over a snapshot (docs/queue.md, "The ledger"): a device handed to an mdtui run stays reserved until that run's engine process
group is gone, whatever its memory says; processes of other people count through the free-memory and
utilisation thresholds; `[settings]` policies narrow the choice.

Picking is one atomic step with the store (``reserve``): every launcher (CLI, TUI, scheduler) holds
``runs/ledger.lock`` from reading the reservations until the new run is marked ``starting`` on its
devices in the index, so two launches never land on one device however fast they come.
"""

from __future__ import annotations

import contextlib
import getpass
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mdtui.execution import ranks
from mdtui.execution.launching import on_cluster
from mdtui.runs.status import LIVE, RunStatus
from mdtui.system.fs import file_lock
from mdtui.system.gpus import CPU_ID, Device, GpuConfigError, cpu_device, list_devices
from mdtui.system.processes import boot_id

if TYPE_CHECKING:
    from mdtui.registry.plan import Plan
    from mdtui.runs.store import RunRecord, RunStore

LEDGER_LOCK = "ledger.lock"


@dataclass(frozen=True)
class Policy:
    exclude: tuple[str, ...] = ()  # device ids or UUIDs never to use
    max_devices: int | None = None  # most devices this user holds at once
    runs_per_device: int = 1
    min_free_memory_mb: int = 2048
    max_utilization: int = 90
    order: tuple[str, ...] = ()  # preferred device order (ids or UUIDs); the rest follow

    @classmethod
    def from_settings(cls, settings: object) -> Policy:
        return cls(
            exclude=tuple(str(d) for d in getattr(settings, "exclude_devices", ()) or ()),
            max_devices=getattr(settings, "max_devices", None),
            runs_per_device=int(getattr(settings, "runs_per_device", 1) or 1),
            min_free_memory_mb=int(getattr(settings, "min_free_memory_mb", 2048)),
            max_utilization=int(getattr(settings, "max_utilization", 90)),
            order=tuple(str(d) for d in getattr(settings, "device_order", ()) or ()),
        )


@dataclass(frozen=True)
class Reservation:
    """An mdtui run holding devices until its engine's process group is gone."""

    run_id: str
    devices: tuple[str, ...]


def matches(device: Device, spec: str) -> bool:
    """A policy entry names a device by index ("0") or UUID ("GPU-..."); naming a GPU in MIG mode
    names all its instances ("0:0", "0:1", ...)."""
    if device.parent_uuid and spec in (device.gpu_index, device.parent_uuid):
        return True
    return spec in (device.id, device.uuid)


def reservation_counts(reservations: Iterable[Reservation]) -> Counter[str]:
    return Counter(d for r in reservations for d in r.devices)


def blocker(device: Device, policy: Policy, held: Counter[str]) -> str | None:
    """Why ``device`` cannot take one more run now, or None when it can."""
    if any(matches(device, spec) for spec in policy.exclude):
        return "excluded by [settings] exclude_devices"
    ours = held.get(device.id, 0)
    if ours >= policy.runs_per_device:
        return f"reserved by {ours} mdtui run{'s' if ours > 1 else ''} (runs_per_device = {policy.runs_per_device})"
    if device.is_cpu:
        return None  # the CPU is shared by nature: only the runs-per-device rule applies
    if device.memory_free_mb < policy.min_free_memory_mb:
        owners = sorted({p.owner for p in device.processes if p.owner})
        by = f" by {', '.join(owners)}" if owners else ""
        return f"{device.memory_free_mb} MiB free{by} (min_free_memory_mb = {policy.min_free_memory_mb})"
    # utilisation cannot be attributed per process: once we hold the device, its load is ours
    if ours == 0 and device.utilization > policy.max_utilization:
        return f"{device.utilization}% busy (max_utilization = {policy.max_utilization})"
    return None


def user_devices(devices: list[Device], held: Counter[str], user: str | None = None) -> set[str]:
    """Devices this user occupies: reserved by mdtui runs, or running any of the user's processes."""
    user = user if user is not None else _current_user()
    occupied = {d for d, n in held.items() if n > 0}
    for device in devices:
        if any(p.owner == user for p in device.processes):
            occupied.add(device.id)
    return occupied - {CPU_ID}


def ordered(devices: list[Device], policy: Policy, held: Counter[str]) -> list[Device]:
    """Preferred order: `device_order` first as written, then fewest own runs, most free memory,
    least busy, lowest index (a stable, predictable order when devices are alike)."""

    def rank(device: Device) -> tuple[int, int, int, int, int, str]:
        listed = next((i for i, spec in enumerate(policy.order) if matches(device, spec)), len(policy.order))
        index = int(device.id) if device.id.isdigit() else 1 << 20
        return (listed, held.get(device.id, 0), -device.memory_free_mb, device.utilization, index, device.id)

    return sorted(devices, key=rank)


def pick(
    devices: list[Device],
    reservations: Iterable[Reservation],
    policy: Policy,
    count: int,
    *,
    candidates: list[str] | None = None,
    user: str | None = None,
) -> list[str] | None:
    """``count`` device ids for a new run, or None when they do not fit now.

    ``candidates`` (from ``--device``) limits the choice to those ids, in the order given.
    On a machine whose only device is the CPU every run gets ``["cpu"]``.
    """
    held = reservation_counts(reservations)
    if not devices and candidates != [CPU_ID]:
        return None  # no device facts at all (a broken MDTUI_FAKE_GPUS): wait rather than guess
    if all(d.is_cpu for d in devices) or candidates == [CPU_ID]:
        cpu = next((d for d in devices if d.is_cpu), None) or cpu_device()
        return [CPU_ID] if blocker(cpu, policy, held) is None else None
    pool = [d for d in devices if not d.is_cpu]
    if candidates:
        pool = [d for spec in candidates for d in pool if matches(d, spec)]
    else:
        pool = ordered(pool, policy, held)
    occupied = user_devices(devices, held, user)
    chosen: list[str] = []
    for device in pool:
        if len(chosen) == count:
            break
        if blocker(device, policy, held) is not None:
            continue
        # holding one more device must stay within max_devices; a device already held costs nothing
        over = (
            policy.max_devices is not None and len(occupied | set(chosen) | {device.id}) > policy.max_devices
        )
        if over:
            continue
        chosen.append(device.id)
    return chosen if len(chosen) == count else None


def never_fits(
    devices: list[Device], policy: Policy, count: int, candidates: list[str] | None = None
) -> str | None:
    """Why a request can never be met on this machine (checked at enqueue), or None."""
    if all(d.is_cpu for d in devices) or candidates == [CPU_ID]:
        return None
    gpus = [d for d in devices if not d.is_cpu]
    usable = [d for d in gpus if not any(matches(d, s) for s in policy.exclude)]
    ids = [d.id for d in gpus]
    if candidates:
        unknown = [c for c in candidates if not any(matches(d, c) for d in gpus)]
        if unknown:
            return f"no device {', '.join(unknown)} on this machine (devices: {', '.join(ids) or 'none'})"
        excluded = [c for c in candidates if not any(matches(d, c) for d in usable)]
        if excluded:
            return f"device {', '.join(excluded)} is excluded by [settings] exclude_devices"
        if count > len(candidates):
            return f"{count} devices needed but only {len(candidates)} given with --device"
        return None
    if count > len(usable):
        return f"{count} devices needed but this machine has {len(usable)} usable ({len(ids)} in all)"
    if policy.max_devices is not None and count > policy.max_devices:
        return f"{count} devices needed but [settings] max_devices = {policy.max_devices}"
    return None


# --------------------------------------------------------------------------------------- with the store


def gpus_snapshot() -> list[Device]:
    """``list_devices()``; a broken fake description reads as no devices, so nothing launches."""
    try:
        return list_devices()
    except GpuConfigError:
        return []


def engine_alive(rec: RunRecord) -> bool:
    """Does the run's engine process group still exist? Identity: pid + start time + boot id.

    The engine leads its own group (pgid == pid); ``ranks.group_alive`` says whether the group still
    holds a live process (data-loader workers outlive their leader). A run of several processes is
    alive too while any of its ranks is: torchrun starts them in sessions of their own, and a rank
    whose torchrun was killed finishes its step and saves last.pt on its device before it exits.
    """
    if not rec.pid or rec.proc_start is None:
        return False
    if rec.boot_id and boot_id() not in (None, rec.boot_id):
        return False
    if ranks.group_alive(rec.pid, rec.proc_start, rec.pgid):
        return True
    run_dir = getattr(rec, "run_dir", None)  # a bare record (pid facts only) has no ranks to read
    return run_dir is not None and ranks.ranks_alive(Path(run_dir))


def reservations(store: RunStore) -> list[Reservation]:
    """Live runs hold their devices, and so does a `lost` run whose engine is still alive (its
    supervisor died, the engine has not stopped yet)."""
    # a run on a cluster (a Slurm job) holds what Slurm granted it on a cluster node, nothing of this machine's
    held = [r for r in store.list_runs(statuses=list(LIVE)) if not on_cluster(r)]
    held += [r for r in store.list_runs(statuses=[RunStatus.LOST.value]) if engine_alive(r)]
    return [Reservation(r.run_id, tuple(r.devices)) for r in held]


@contextlib.contextmanager
def locked(store: RunStore) -> Iterator[None]:
    """The ledger lock of a runs directory: pick-and-reserve happens under it, nowhere else."""
    with file_lock(Path(store.runs_dir) / LEDGER_LOCK):
        yield


def over_capacity(devices: list[str], held: Iterable[Reservation], policy: Policy) -> list[str]:
    """Devices of an explicit request (``--device``, a resume) already holding ``runs_per_device``
    mdtui runs. Only reservations count: foreign load on a device the user named is the user's call."""
    counts = reservation_counts(held)
    return [d for d in devices if counts.get(d, 0) >= policy.runs_per_device]


def reserve(
    store: RunStore,
    policy: Policy,
    count: int,
    claim: Callable[[list[str]], bool],
    *,
    candidates: list[str] | None = None,
    explicit: list[str] | None = None,
    snapshot: list[Device] | None = None,
) -> list[str] | None:
    """Pick devices and hand them to ``claim`` in one step under the ledger lock; the devices, or None.

    ``claim(devices)`` must mark the run ``starting`` on ``devices`` in the index (that is what makes
    them reserved for the next caller) and return True, or return False to decline. ``explicit``
    devices are taken as given unless mdtui runs already fill them; otherwise the policy picks
    ``count`` of ``candidates`` (or of all devices) from ``snapshot`` (default: a fresh look).
    """
    with locked(store):
        held = reservations(store)
        if explicit is not None:
            chosen: list[str] | None = None if over_capacity(explicit, held, policy) else list(explicit)
        else:
            devices = snapshot if snapshot is not None else gpus_snapshot()
            chosen = pick(devices, held, policy, count, candidates=candidates)
        if chosen is None or not claim(chosen):
            return None
        return chosen


def pick_devices(
    store: RunStore, plan: Plan, count: int, *, prefer: list[str] | None = None
) -> list[str] | None:
    """Devices for one more run now (ledger-aware), or None when they do not fit. A look only:
    nothing is reserved (``reserve`` does that)."""
    policy = Policy.from_settings(plan.settings)
    return pick(gpus_snapshot(), reservations(store), policy, count, candidates=prefer)


def waiting_reason(
    devices: list[Device], held: list[Reservation], policy: Policy, count: int, specs: Iterable[str] = ()
) -> str:
    """Why a run needing ``count`` devices (of ``specs``, when given) cannot start now, device by device (excluded devices are not worth a word)."""
    counts = reservation_counts(held)
    specs = tuple(specs)
    wanted = [d for d in devices if not specs or any(matches(d, s) for s in specs)]
    notes, free = [], []
    for device in wanted:
        why = blocker(device, policy, counts)
        if why is None:
            free.append(device.id)
        elif not why.startswith("excluded"):
            notes.append(f"{device.id}: {why}")
    if free and policy.max_devices is not None:
        mine = ",".join(sorted(user_devices(devices, counts)))
        notes.append(f"max_devices = {policy.max_devices} reached (holding {mine})")
    if not devices:
        notes.append("no devices found: see `mdtui gpus`")
    need = f"{count} device{'s' if count > 1 else ''}"
    return f"waiting for {need}" + (f" ({'; '.join(notes)})" if notes else "")


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
