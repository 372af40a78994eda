"""A deterministic, realistic set of images and image actions for the fake API."""

from __future__ import annotations

import copy
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

FIRST_ACTION_ID = 3_169_590_176  # ids past 2^31 are what production sends today
FIRST_IMAGE_ID = 62_137_902
EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

SIZES = ["s-1vcpu-1gb", "s-1vcpu-2gb", "s-2vcpu-2gb", "s-2vcpu-4gb", "s-4vcpu-8gb"]
FEATURES = ["private_networking", "backups", "ipv6", "metadata", "install_agent", "storage"]
# What a wider world (region_scale > 1) appends: more of the slugs a real region lists.
MORE_SIZES = [
    "s-1vcpu-1gb-amd", "s-1vcpu-2gb-intel", "s-2vcpu-4gb-amd", "s-4vcpu-8gb-intel",
    "s-8vcpu-16gb-amd", "c2-2vcpu-4gb-intel", "g-2vcpu-8gb-intel", "gd-2vcpu-8gb-intel",
    "m-2vcpu-16gb-intel", "m3-2vcpu-16gb-intel", "so-2vcpu-16gb-intel", "c-4-intel",
    "so1_5-2vcpu-16gb-intel", "g-4vcpu-16gb-intel", "c2-4vcpu-8gb-intel",
]  # fmt: skip
MORE_FEATURES = [
    "management_networking", "server_id", "virtio", "load_balancers", "container_registry",
    "kubernetes", "partner_interconnect", "volumes", "reserved_ips", "monitoring",
    "firewalls", "databases", "app_platform", "droplet_autoscale", "functions",
    "uptime_checks", "snapshots", "custom_images", "vpc_peering", "vpc", "gpu_droplets",
]  # fmt: skip
REGION_FEATURES = [*FEATURES, "image_transfer"]
# Each step of region_scale adds as many slugs as the default lists hold; the lists above
# last for three steps.
MAX_REGION_SCALE = 4
REGIONS = [
    {"name": "New York 3", "slug": "nyc3"},
    {"name": "Amsterdam 3", "slug": "ams3"},
    {"name": "San Francisco 3", "slug": "sfo3"},
    {"name": "Frankfurt 1", "slug": "fra1"},
    {"name": "Singapore 1", "slug": "sgp1"},
]
RECENT_ACTIONS = 3  # the newest actions of an image may still be in progress
# (type, weight): transfers dominate; destroys come with region: null.
ACTION_TYPES = [("transfer", 6), ("convert", 2), ("create", 1), ("image_destroy", 1)]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _region(rng: random.Random, scale: int = 1) -> dict[str, Any]:
    base = rng.choice(REGIONS)
    sizes = SIZES[: rng.randint(2, len(SIZES))]
    more = scale - 1  # the default world draws nothing more, so it stays as it was
    return {
        "name": base["name"],
        "slug": base["slug"],
        "sizes": [*sizes, *MORE_SIZES[: more * len(sizes)]],
        "features": [*REGION_FEATURES, *MORE_FEATURES[: more * len(REGION_FEATURES)]],
        "available": rng.random() > 0.1,
    }


def make_action(
    rng: random.Random,
    action_id: int,
    image_id: int,
    started: datetime,
    *,
    recent: bool = False,
    region_scale: int = 1,
) -> dict[str, Any]:
    """Return one action shaped like the API's, with realistic nulls and statuses.

    Only ``recent`` actions can still be in progress; old ones have finished, one way or another.
    A ``region_scale`` of n lists n times as many region sizes and features.
    """
    kind = rng.choices([t for t, _ in ACTION_TYPES], weights=[w for _, w in ACTION_TYPES])[0]
    weights = [60, 5, 35] if recent else [94, 6, 0]
    status = rng.choices(["completed", "errored", "in-progress"], weights=weights)[0]
    region = None if kind == "image_destroy" else _region(rng, region_scale)
    done = started + timedelta(seconds=rng.randint(20, 900))
    return {
        "id": action_id,
        "status": status,
        "type": kind,
        "started_at": _stamp(started),
        "completed_at": None if status == "in-progress" else _stamp(done),
        "resource_id": image_id,
        "resource_type": "image",
        "region": region,
        "region_slug": region["slug"] if region else None,
    }


OTHER_RESOURCES = [("droplet", "power_cycle"), ("droplet", "snapshot"), ("volume", "attach")]


def make_other_action(rng: random.Random, action_id: int, started: datetime) -> dict[str, Any]:
    """Return an action on another resource (a droplet, a volume), as the account feed lists."""
    resource_type, kind = rng.choice(OTHER_RESOURCES)
    return {
        "id": action_id,
        "status": "completed",
        "type": kind,
        "started_at": _stamp(started),
        "completed_at": _stamp(started + timedelta(seconds=rng.randint(5, 120))),
        "resource_id": rng.randint(10_000_000, 99_999_999),
        "resource_type": resource_type,
        "region": None,
        "region_slug": "nyc3",
    }


def make_image(image_id: int, index: int) -> dict[str, Any]:
    """Return a private snapshot image shaped like the API's."""
    return {
        "id": image_id,
        "name": f"app-{index:04d}-snapshot",
        "type": "snapshot",
        "distribution": "Ubuntu",
        "slug": None,
        "public": False,
        "regions": ["nyc3"],
        "created_at": _stamp(EPOCH + timedelta(hours=index)),
        "min_disk_size": 25,
        "size_gigabytes": 2.36,
        "description": "",
        "tags": [],
        "status": "available",
        "error_message": "",
    }


@dataclass
class World:
    """Images and their actions, newest action first; safe to change while being served.

    With ``others_per_action``, each new image action comes after that many actions on
    other resources, which only the account feed (``feed``) lists, as on a real account.
    With ``region_scale`` n, each region lists n times as many sizes and features (heavier
    pages, for the benchmark); 1 is the world the tests know.
    """

    images: dict[int, dict[str, Any]] = field(default_factory=dict)
    actions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    others: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    others_per_action: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    next_action_id: int = FIRST_ACTION_ID
    seed: int = 0
    region_scale: int = 1

    @classmethod
    def generate(
        cls,
        *,
        images: int = 5,
        actions_per_image: int = 120,
        seed: int = 42,
        others_per_action: int = 0,
        region_scale: int = 1,
    ) -> World:
        """Return a world of ``images`` images with ``actions_per_image`` actions each.

        Raises:
            ValueError: ``region_scale`` is outside 1..MAX_REGION_SCALE.
        """
        if not 1 <= region_scale <= MAX_REGION_SCALE:
            raise ValueError(f"region_scale must be 1..{MAX_REGION_SCALE}, not {region_scale}")
        world = cls(seed=seed, others_per_action=others_per_action, region_scale=region_scale)
        for index in range(images):
            image_id = FIRST_IMAGE_ID + index * 1013
            world.images[image_id] = make_image(image_id, index)
            world.actions[image_id] = []
            world.add_actions(image_id, actions_per_image)
        return world

    def add_actions(self, image_id: int, count: int) -> list[dict[str, Any]]:
        """Push ``count`` new actions to the head of an image's list and return them."""
        with self.lock:
            rng = random.Random(f"{self.seed}:{image_id}:{self.next_action_id}")  # noqa: S311
            listed = self.actions[image_id]
            started = EPOCH + timedelta(minutes=len(listed) * 37)
            new = []
            for offset in range(count):
                moment = started + timedelta(minutes=offset * 37)
                for _ in range(self.others_per_action):
                    self.others.append(make_other_action(rng, self.next_action_id, moment))
                    self.next_action_id += 1
                action = make_action(
                    rng,
                    self.next_action_id,
                    image_id,
                    moment,
                    recent=offset >= count - RECENT_ACTIONS,
                    region_scale=self.region_scale,
                )
                self.next_action_id += 1
                new.append(action)
            listed[:0] = reversed(new)
            return new

    def complete(self, action_id: int, *, status: str = "completed") -> dict[str, Any]:
        """Finish an action: set its status and completed_at; return it."""
        with self.lock:
            action = self.find(action_id)
            action["status"] = status
            action["completed_at"] = _stamp(
                datetime.fromisoformat(action["started_at"]) + timedelta(minutes=5)
            )
            return action

    def finish_all(self) -> None:
        """Complete every action still in progress, as time does."""
        with self.lock:
            for listed in self.actions.values():
                for action in listed:
                    if action["status"] == "in-progress":
                        started = datetime.fromisoformat(action["started_at"])
                        action["status"] = "completed"
                        action["completed_at"] = _stamp(started + timedelta(minutes=5))

    def find(self, action_id: int) -> dict[str, Any]:
        """Return the stored action with ``action_id`` (the live object, not a copy)."""
        with self.lock:
            for listed in self.actions.values():
                for action in listed:
                    if action["id"] == action_id:
                        return action
        raise KeyError(action_id)

    def page(
        self, image_id: int, page: int, per_page: int, *, newest_first: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of an image's actions (a new list of the live actions) and the total.

        The handler serialises the page at once; a deep copy of every page would make the
        fake, not the sync, the bottleneck of the benchmark.
        """
        with self.lock:
            listed = self.actions[image_id]
            if not newest_first:
                listed = listed[::-1]
            start = (page - 1) * per_page
            return listed[start : start + per_page], len(listed)

    def feed(
        self, page: int, per_page: int, *, hidden: frozenset[int] = frozenset()
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of the account feed (every action, newest first) and its total."""
        with self.lock:
            listed = [action for actions in self.actions.values() for action in actions]
            listed.extend(self.others)
            if hidden:
                listed = [action for action in listed if action["id"] not in hidden]
            listed.sort(key=lambda action: action["id"], reverse=True)
            start = (page - 1) * per_page
            return listed[start : start + per_page], len(listed)

    def find_any(self, action_id: int) -> dict[str, Any] | None:
        """Return the action with ``action_id`` on any resource, or None."""
        with self.lock:
            for action in self.others:
                if action["id"] == action_id:
                    return action
            try:
                return self.find(action_id)
            except KeyError:
                return None

    def all_actions(self) -> list[tuple[int, dict[str, Any]]]:
        """Return (image_id, action) for every action, as a deep copy."""
        with self.lock:
            return [
                (image_id, copy.deepcopy(action))
                for image_id, listed in self.actions.items()
                for action in listed
            ]
