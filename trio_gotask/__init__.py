"""Call Go from Trio: a supervised Go sidecar, multiplexed msgpack RPC, structured cancellation.

    async with trio_gotask.open_gotask("./sidecar") as gt:
        print(await gt.call("App.Hi", "Reasno"))

See README.md for a tour and docs/protocol.md for the wire protocol.
"""

from ._build import build_sidecar as build_sidecar
from ._client import GoTask as GoTask
from ._client import GoTaskStatistics as GoTaskStatistics
from ._client import Service as Service
from ._client import connect_gotask as connect_gotask
from ._client import open_gotask as open_gotask
from ._errors import BadParams as BadParams
from ._errors import BadReply as BadReply
from ._errors import GoTaskError as GoTaskError
from ._errors import MethodNotFound as MethodNotFound
from ._errors import PanicError as PanicError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteError as RemoteError
from ._errors import ShuttingDown as ShuttingDown
from ._errors import SidecarError as SidecarError
from ._intercept import CallInfo as CallInfo
from ._intercept import CallNext as CallNext
from ._intercept import HostCallInfo as HostCallInfo
from ._intercept import HostCallNext as HostCallNext
from ._intercept import HostInterceptor as HostInterceptor
from ._intercept import Interceptor as Interceptor
from ._statistics import EndpointStatistics as EndpointStatistics
from ._stream import ItemStream as ItemStream
from ._supervisor import RestartPolicy as RestartPolicy
from ._wire import PROTOCOL_VERSION as PROTOCOL_VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "BadParams",
    "BadReply",
    "CallInfo",
    "CallNext",
    "EndpointStatistics",
    "GoTask",
    "GoTaskError",
    "GoTaskStatistics",
    "HostCallInfo",
    "HostCallNext",
    "HostInterceptor",
    "Interceptor",
    "ItemStream",
    "MethodNotFound",
    "PanicError",
    "ProtocolError",
    "RemoteError",
    "RestartPolicy",
    "Service",
    "ShuttingDown",
    "SidecarError",
    "build_sidecar",
    "connect_gotask",
    "open_gotask",
]
__version__ = "0.1.0.dev0"
