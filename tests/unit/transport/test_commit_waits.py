"""An offset commit waits until the deliveries of records already handled are acknowledged."""

import asyncio

import faust.transport.consumer as faust_consumer

from streamsafe.transport.consumer import SafeSeekConsumer, settle_before_commit


class App:
    pass


async def test_the_commit_starts_only_once_every_delivery_sent_before_it_is_acknowledged(monkeypatch):
    order = []
    acknowledged = asyncio.Event()

    async def settle():
        order.append("settle")
        await acknowledged.wait()  # a delivery still awaiting the broker
        order.append("settled")

    async def stock_commit(self, offsets, start_new_transaction=True):
        order.append(("commit", dict(offsets)))
        return True

    monkeypatch.setattr(faust_consumer.Consumer, "_commit_offsets", stock_commit)
    consumer = SafeSeekConsumer.__new__(SafeSeekConsumer)  # no app or broker needed for this one method
    consumer.app = App()
    settle_before_commit(consumer.app, settle)
    committing = asyncio.create_task(consumer._commit_offsets({"tp": 5}))
    await asyncio.sleep(0.05)
    assert order == ["settle"] and not committing.done()  # nothing committed while a delivery is pending
    acknowledged.set()
    assert await committing is True
    assert order == ["settle", "settled", ("commit", {"tp": 5})]


async def test_without_a_publisher_the_commit_is_faust_s(monkeypatch):
    async def stock_commit(self, offsets, start_new_transaction=True):
        return "stock"

    monkeypatch.setattr(faust_consumer.Consumer, "_commit_offsets", stock_commit)
    consumer = SafeSeekConsumer.__new__(SafeSeekConsumer)
    consumer.app = App()
    assert await consumer._commit_offsets({}) == "stock"
