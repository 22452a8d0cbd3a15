"""The in-memory channel layer sweeps expired entries at most once a second (kimichat/channel_layers.py): what it
expires is still expired, and N sockets no longer cost N sweeps of everything each."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryLayer
from channels.layers import channel_layers, get_channel_layer

from kimichat.channel_layers import InMemoryChannelLayer


@pytest.fixture
def sweeps(monkeypatch):
    """How many times channels' own sweep ran."""
    counted = []
    real = ChannelsInMemoryLayer._clean_expired

    def counting(self):
        counted.append(1)
        return real(self)

    monkeypatch.setattr(ChannelsInMemoryLayer, "_clean_expired", counting)
    return counted


IN_MEMORY = {"default": {"BACKEND": "kimichat.channel_layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}


def test_without_redis_the_settings_name_this_layer(settings):
    if settings.REDIS_URL:
        pytest.skip("with REDIS_URL the layer is channels-redis's (the second pass of make test)")
    assert settings.CHANNEL_LAYERS == IN_MEMORY


async def test_the_layer_sweeps_once_for_many_sockets(settings, sweeps):
    settings.CHANNEL_LAYERS = IN_MEMORY  # as without REDIS_URL (the test above), whatever this run's settings
    channel_layers.backends = {}
    layer = get_channel_layer()
    assert isinstance(layer, InMemoryChannelLayer)
    names = [await layer.new_channel() for _ in range(200)]
    for n, name in enumerate(names):
        await layer.group_add(f"user.{n}", name)
    # Two hundred sockets start waiting, as their consumers do, and a group message goes out.
    waiting = [asyncio.create_task(layer.receive(name)) for name in names]
    await asyncio.sleep(0)
    await layer.group_send("user.7", {"type": "chat.note", "text": "hello"})
    assert await asyncio.wait_for(waiting[7], 1) == {"type": "chat.note", "text": "hello"}
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert len(sweeps) == 1  # channels' layer: 202, each over every queue and membership


async def test_what_expired_is_still_removed_within_a_sweep_interval(sweeps):
    layer = InMemoryChannelLayer(expiry=0.05, group_expiry=1)
    layer.SWEEP_EVERY = 0.2
    stale, live = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("conv.1", stale)
    await layer.send(stale, {"type": "chat.note"})  # never read: expires, and takes its channel out of its groups
    await asyncio.sleep(0.3)
    await layer.send(live, {"type": "chat.note"})
    assert await layer.receive(live) == {"type": "chat.note"}  # this receive sweeps
    assert stale not in layer.channels
    assert stale not in layer.groups.get("conv.1", {})
    swept = len(sweeps)
    await layer.send(live, {"type": "chat.again"})
    assert await layer.receive(live) == {"type": "chat.again"}
    assert len(sweeps) == swept  # within the interval: no second sweep


def test_the_registry_takes_the_in_memory_layer_for_one_process(settings):
    from conversations.services.chat.registry import GenerationRegistry

    settings.CHANNEL_LAYERS = IN_MEMORY
    channel_layers.backends = {}
    assert GenerationRegistry().multi_process is False
