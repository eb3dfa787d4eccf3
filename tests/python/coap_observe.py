"""A CoAP device's observer written with aiocoap, driven by the integration tests.

Usage: coap_observe.py URI SECONDS

Observes URI (RFC 7641) over plain CoAP: prints "response <code> <payload>" for the first
answer and "notification <payload>" for every notification, and exits after SECONDS.
"""

import asyncio
import sys

from aiocoap import GET, Context, Message


async def main():
    uri, seconds = sys.argv[1], float(sys.argv[2])
    context = await Context.create_client_context()
    request = context.request(Message(code=GET, uri=uri, observe=0))
    first = await request.response
    print(f"response {first.code.dotted} {first.payload.decode()}", flush=True)

    async def notifications():
        async for notification in request.observation:
            print(f"notification {notification.payload.decode()}", flush=True)

    try:
        await asyncio.wait_for(notifications(), seconds)
    except asyncio.TimeoutError:
        pass
    await context.shutdown()


asyncio.run(main())
