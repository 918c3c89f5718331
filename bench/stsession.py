"""A light Streamlit session: one app session over Streamlit's own websocket protocol, no browser.

``bench/load.py`` runs ten or more of these against one ``streamlit run`` server on a 2-core
machine, where as many chromium contexts would measure the browsers instead of the server;
``tests/test_server_sessions.py`` opens a hundred. It speaks what the browser speaks (learnt
from Streamlit 1.67's ``web/server/starlette`` and ``runtime/app_session.py``):

- ``GET /_stcore/health`` first: it sets the ``_streamlit_xsrf`` cookie that the websocket's
  sub-protocol list (``streamlit, <token>``) and every upload carry.
- ``/_stcore/stream`` carries one protobuf per binary frame: ``BackMsg`` up, ``ForwardMsg`` down.
- A run is a ``BackMsg.rerun_script`` (a ``ClientState``). The page is chosen as the browser
  does under ``st.navigation``: a first load names it by URL path (``page_name="classify"``,
  empty for the default page); later, within the session, by the ``page_script_hash`` the
  ``navigation`` message listed for it (a click in the sidebar). The query string travels
  as ``query_string`` and follows the server's ``page_info_changed`` (``st.query_params``).
- The answer is ``new_session``, deltas (``metadata.delta_path`` places each element or
  block in the page tree), then ``script_finished``: 0 for a whole run, 3 for a fragment's
  run, 2 when a run gave way to a newer one, 1 for a compile error.
- Widget values go up in ``ClientState.widget_states``: a toggle as ``bool_value``, a
  selectbox as the chosen option's text (``string_value``), a button as a ``trigger_value``
  sent once. Like the browser, the session keeps the values it set and drops those whose
  widget left the page; widgets it never touched keep the server's value.
- An upload is ``BackMsg.file_urls_request`` -> ``ForwardMsg.file_urls_response`` (one
  ``/_stcore/upload_file/<session>/<file>`` URL per file) -> an HTTP ``PUT`` of each file as
  ``multipart/form-data`` (field ``file``, header ``X-Xsrftoken``) -> the uploader's widget
  state (``file_uploader_state_value``: name, size, file id and URLs) -> a rerun.
  Replacing the files ``DELETE``s the old ones first, as removing them in the browser does.
- ``st.fragment(run_every=...)`` sends ``auto_rerun`` (interval, fragment id); the *client*
  then asks for each fragment run (``fragment_id``, ``is_auto_rerun``). :meth:`Session.idle`
  does so while it waits, like a browser tab left open.
- Messages the server marks ``cacheable`` are kept; their hashes go up with each rerun and
  the server may answer with a ``ref_hash`` instead of resending them, as it does to a
  browser (kept for ``max_cached_message_age`` runs, Streamlit's own rule).

Every wait has a deadline; a timeout, a closed socket or a message that does not fit raises
:class:`ProtocolError`. Not thread-safe: one thread per session.

Example::

    with Session("http://127.0.0.1:8501") as s:
        s.open("classify", run="20260101-...")
        done = s.upload("Images (JPEG, PNG, WebP, BMP, GIF, TIFF)", [("cat.jpg", data)])
        print(done.seconds, done.errors, len(s.elements("plotly_chart")))
"""

from __future__ import annotations

import contextlib
import http.client
import mimetypes
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Common_pb2 import FileURLs, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

XSRF_COOKIE = "_streamlit_xsrf"
FULL_RUN_DONE = {ForwardMsg.FINISHED_SUCCESSFULLY: "ok", ForwardMsg.FINISHED_WITH_COMPILE_ERROR: "compile error"}
FRAGMENT_DONE = ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY
ERROR_ALERT = 1  # Alert.Format.ERROR


class ProtocolError(RuntimeError):
    """The server did not answer in time, closed the connection, or answered something
    this client does not expect."""


@dataclass
class Element:
    """One element or block of the page: ``kind`` is the proto's type (``"checkbox"``,
    ``"plotly_chart"``, ``"alert"``, ... or ``"block"``) and ``proto`` its message."""

    path: tuple
    kind: str
    proto: object
    run: str = ""  # the script run that last wrote it
    fragment: str = ""  # the fragment it belongs to, if any

    @property
    def label(self) -> str:
        for name in ("label", "body"):
            value = getattr(self.proto, name, None)
            if isinstance(value, str):
                return value
        return ""

    @property
    def widget_id(self) -> str:
        value = getattr(self.proto, "id", "")
        return value if isinstance(value, str) else ""


@dataclass
class Outcome:
    """What one action cost and left on the page.

    ``seconds``: from sending the request to its ``script_finished``; ``status``: ``"ok"``,
    ``"fragment"`` (a fragment's run) or ``"compile error"``; ``errors``: the page's
    exceptions and ``st.error`` texts after the run; ``received``: bytes of messages."""

    seconds: float
    status: str
    errors: list = field(default_factory=list)
    received: int = 0


class Session:
    """One browser tab's worth of Streamlit session, driven from Python.

    Args:
        base_url: the server, e.g. ``"http://127.0.0.1:8501"``.
        timeout: seconds any one wait may take (a first model load counts).
        resume: the id of a disconnected session to take up again, as a browser does after
            a dropped connection (the server starts a new session once that one expired).
    """

    def __init__(self, base_url: str, timeout: float = 120.0, resume: str = ""):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.resume = resume
        self.session_id = ""
        self.page = ""  # url path of the page on screen ("" is the default page)
        self.query = ""
        self.tree = {}  # delta path -> Element
        self.pages = {}  # url path -> page script hash, from the navigation message
        self.fragment_runs = []  # Outcome of every fragment run this session asked for
        self._page_hash = ""
        self._widgets = {}  # widget id -> WidgetState the user set
        self._uploads = {}  # uploader widget id -> [UploadedFileInfo]
        self._auto = {}  # fragment id -> [interval seconds, next due (monotonic)]
        self._pending = None  # (fragment id, sent at) of an auto rerun in flight
        self._cache = {}  # message hash -> [ForwardMsg, full runs seen at]
        self._cache_age = 2
        self._full_runs = 0  # whole runs finished
        self._full_starts = 0  # whole runs started
        self._run_id = ""
        self._run_fragments = ()
        self._file_urls = {}
        self._received = 0
        self._stack = contextlib.ExitStack()
        self._ws = None
        self._xsrf = ""

    # -- connection -------------------------------------------------------------------

    def connect(self) -> None:
        """Open the websocket (done by the first :meth:`open`)."""
        if self._ws is not None:
            return
        host = urllib.parse.urlsplit(self.base_url)
        try:
            with urllib.request.urlopen(f"{self.base_url}/_stcore/health", timeout=self.timeout) as answer:
                for header in answer.headers.get_all("Set-Cookie") or []:
                    name, _, rest = header.partition("=")
                    if name.strip() == XSRF_COOKIE:
                        self._xsrf = rest.split(";")[0]
        except OSError as exc:
            raise ProtocolError(f"{self.base_url}/_stcore/health did not answer: {exc}") from exc
        scheme = "wss" if host.scheme == "https" else "ws"
        # Positions count: the XSRF token second, a session to resume third.
        protocols = ["streamlit", self._xsrf or "-"] + ([self.resume] if self.resume else [])
        try:
            self._ws = self._stack.enter_context(connect(
                f"{scheme}://{host.netloc}{host.path}/_stcore/stream", subprotocols=protocols,
                max_size=None, open_timeout=self.timeout, close_timeout=5,
                additional_headers={"Cookie": f"{XSRF_COOKIE}={self._xsrf}"} if self._xsrf else None))
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            raise ProtocolError(f"could not open {self.base_url}/_stcore/stream: {exc}") from exc

    def close(self) -> None:
        """Close the websocket; the server keeps the session as disconnected for
        ``server.disconnectedSessionTTL`` seconds, as after a closed tab."""
        self._ws = None
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- actions ----------------------------------------------------------------------

    def open(self, page: str = "", **query) -> Outcome:
        """Show ``page`` (its URL path: ``"classify"``; ``""`` for the default page) with
        ``query`` as its query string, as a first load or a click in the sidebar does."""
        self.connect()
        self.page, self.query = page, urllib.parse.urlencode(query)
        target = self.pages.get(page)
        if target is None:  # the first load: the server finds the page by its URL path
            return self._rerun(page_name=page, context=True)
        return self._rerun(page_hash=target)

    def rerun(self) -> Outcome:
        """Run the page again with the current widget values."""
        return self._rerun(page_hash=self._page_hash)

    def toggle(self, label: str, value: bool = True) -> Outcome:
        """Set a checkbox or toggle and rerun."""
        element = self.widget(label, "checkbox")
        self._widgets[element.widget_id] = WidgetState(id=element.widget_id, bool_value=value)
        return self.rerun()

    def select(self, label: str, index: int) -> Outcome:
        """Choose a selectbox's option by its position and rerun."""
        element = self.widget(label, "selectbox")
        options = list(element.proto.options)
        if not 0 <= index < len(options):
            raise IndexError(f"selectbox '{label}' has {len(options)} options; asked for index {index}")
        self._widgets[element.widget_id] = WidgetState(id=element.widget_id, string_value=options[index])
        return self.rerun()

    def click(self, label: str) -> Outcome:
        """Press a button (its trigger goes up with this one rerun only)."""
        element = self.widget(label, "button")
        return self._rerun(page_hash=self._page_hash,
                           extra=[WidgetState(id=element.widget_id, trigger_value=True)])

    def upload(self, label: str, files, keep: bool = False) -> Outcome:
        """Upload ``files`` (``(name, bytes)`` pairs) to the ``st.file_uploader`` called
        ``label`` and rerun. The files replace those uploaded before (deleted on the
        server, as the browser's remove does) unless ``keep``."""
        element = self.widget(label, "file_uploader")
        wid = element.widget_id
        if not element.proto.multiple_files and len(files) != 1:
            raise ValueError(f"'{label}' takes one file; got {len(files)}")
        if not keep:
            for info in self._uploads.pop(wid, []):
                self._http("DELETE", info.file_urls.delete_url)
        request_id = uuid.uuid4().hex
        message = BackMsg()
        message.file_urls_request.request_id = request_id
        message.file_urls_request.session_id = self.session_id
        message.file_urls_request.file_names.extend(name for name, _ in files)
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while request_id not in self._file_urls:
            self._handle(self._receive(deadline, "the upload URLs"))
        answer = self._file_urls.pop(request_id)
        if answer.error_msg or len(answer.file_urls) != len(files):
            raise ProtocolError(f"upload URLs refused: {answer.error_msg or len(answer.file_urls)}")
        infos = self._uploads.setdefault(wid, [])
        for (name, data), urls in zip(files, answer.file_urls):
            self._put(urls.upload_url, name, data)
            infos.append(UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id,
                                          file_urls=FileURLs(file_id=urls.file_id, upload_url=urls.upload_url,
                                                             delete_url=urls.delete_url)))
        state = WidgetState(id=wid)
        state.file_uploader_state_value.uploaded_file_info.extend(infos)
        self._widgets[wid] = state
        return self.rerun()

    def idle(self, seconds: float) -> list:
        """Wait ``seconds`` on the page as an open tab does: running each
        ``st.fragment(run_every=...)`` when due. Returns the :class:`Outcome` of each
        fragment run that finished meanwhile (also added to :attr:`fragment_runs`)."""
        end = time.monotonic() + seconds
        done = len(self.fragment_runs)
        while True:
            now = time.monotonic()
            if self._pending is None:
                for fragment, due in self._auto.items():
                    if due[1] <= now:
                        due[1] = now + due[0]
                        self._pending = (fragment, now)
                        self._send(self._rerun_message(self._page_hash, fragment=fragment))
                        break
            elif now - self._pending[1] > self.timeout:
                raise ProtocolError(f"fragment {self._pending[0]} did not finish in {self.timeout:.0f} s")
            if now >= end:
                return self.fragment_runs[done:]
            wake = [end] + ([due[1] for due in self._auto.values()] if self._pending is None else [])
            message = self._receive(max(min(wake), now + 0.01), None)
            if message is not None:
                self._handle(message)

    # -- the page ---------------------------------------------------------------------

    def elements(self, kind: str | None = None, label: str | None = None) -> list:
        """The page's elements in page order, of ``kind`` and/or with ``label``."""
        return [element for _, element in sorted(self.tree.items())
                if (kind is None or element.kind == kind) and (label is None or element.label == label)]

    def widget(self, label: str, kind: str | None = None) -> Element:
        """The one widget called ``label`` (exactly, else the one whose label contains it)."""
        found = [e for e in self.elements(kind) if e.widget_id and e.label == label]
        found = found or [e for e in self.elements(kind) if e.widget_id and label in e.label]
        if len(found) != 1:
            labels = sorted({e.label for e in self.elements(kind) if e.widget_id})
            raise LookupError(f"{len(found)} {kind or 'widget'}s called '{label}' on page '{self.page}'; "
                              f"there are: {labels}")
        return found[0]

    def errors(self) -> list:
        """The page's exceptions (``type: message``) and ``st.error`` texts."""
        found = []
        for element in self.elements():
            if element.kind == "exception":
                found.append(f"{element.proto.type}: {element.proto.message}")
            elif element.kind == "alert" and element.proto.format == ERROR_ALERT:
                found.append(element.proto.body)
        return found

    # -- internals --------------------------------------------------------------------

    def _rerun_message(self, page_hash="", page_name="", fragment="", extra=(), context=False) -> BackMsg:
        message = BackMsg()
        state = message.rerun_script
        state.query_string = self.query
        state.page_script_hash = page_hash
        state.page_name = page_name
        if fragment:
            state.fragment_id = fragment
            state.is_auto_rerun = True
        state.widget_states.widgets.extend(list(self._widgets.values()) + list(extra))
        state.cached_message_hashes.extend(self._cache)
        if context:
            state.context_info.timezone = "UTC"
            state.context_info.timezone_offset = 0
            state.context_info.locale = "en-US"
            state.context_info.url = f"{self.base_url}/{self.page}" + (f"?{self.query}" if self.query else "")
            state.context_info.is_embedded = False
            state.context_info.color_scheme = "light"
        return message

    def _rerun(self, page_hash="", page_name="", extra=(), context=False) -> Outcome:
        """Send a whole-page rerun; wait for its ``script_finished``."""
        start = time.monotonic()
        received = self._received
        self._send(self._rerun_message(page_hash, page_name, extra=extra, context=context))
        deadline = start + self.timeout
        started = self._full_starts
        while True:
            message = self._receive(deadline, f"page '{self.page}' to finish")
            status = self._handle(message)
            # A finish counts once a whole run started after the request (not an older
            # run's finish still on its way).
            if status in FULL_RUN_DONE and self._full_starts > started:
                return Outcome(time.monotonic() - start, FULL_RUN_DONE[status], self.errors(),
                               self._received - received)

    def _send(self, message: BackMsg) -> None:
        if self._ws is None:
            raise ProtocolError("the session is closed")
        try:
            self._ws.send(message.SerializeToString())
        except (ConnectionClosed, OSError) as exc:
            raise ProtocolError(f"the server closed the connection: {exc}") from exc

    def _receive(self, deadline: float, what: str | None):
        """The next ForwardMsg; ``None`` at the deadline when ``what`` is ``None``, else a
        ProtocolError naming ``what``."""
        if self._ws is None:
            raise ProtocolError("the session is closed")
        try:
            data = self._ws.recv(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            if what is None:
                return None
            raise ProtocolError(f"no answer in {self.timeout:.0f} s waiting for {what}") from None
        except (ConnectionClosed, OSError) as exc:
            raise ProtocolError(f"the server closed the connection: {exc}") from exc
        if not isinstance(data, bytes):
            raise ProtocolError(f"a text frame where Streamlit sends protobufs: {data[:80]!r}")
        self._received += len(data)
        message = ForwardMsg()
        try:
            message.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError
            raise ProtocolError(f"not a ForwardMsg ({len(data)} bytes): {exc}") from exc
        return message

    def _handle(self, message: ForwardMsg):
        """Apply one ForwardMsg; return its ``script_finished`` status, else ``None``."""
        if message.HasField("ref_hash"):
            cached = self._cache.get(message.ref_hash)
            if cached is None:
                raise ProtocolError(f"the server referred to message {message.ref_hash}, never received")
            full = ForwardMsg()
            full.CopyFrom(cached[0])
            full.metadata.CopyFrom(message.metadata)
            message = full
        elif message.metadata.cacheable and message.hash:
            self._cache[message.hash] = [message, self._full_runs]
        elif message.hash in self._cache:
            self._cache[message.hash][1] = self._full_runs
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self._new_run(message)
        elif kind == "delta":
            self._delta(message)
        elif kind == "navigation":
            self.pages = {page.url_pathname: page.page_script_hash for page in message.navigation.app_pages}
            self._page_hash = message.navigation.page_script_hash
        elif kind == "page_info_changed":
            self.query = message.page_info_changed.query_string
        elif kind == "auto_rerun":
            self._auto[message.auto_rerun.fragment_id] = [message.auto_rerun.interval,
                                                          time.monotonic() + message.auto_rerun.interval]
        elif kind == "stop_auto_rerun":
            for fragment in message.stop_auto_rerun.fragment_ids:
                self._auto.pop(fragment, None)
        elif kind == "file_urls_response":
            self._file_urls[message.file_urls_response.response_id] = message.file_urls_response
        elif kind == "session_event" and message.session_event.HasField("script_compilation_exception"):
            failure = message.session_event.script_compilation_exception
            self.tree[("compile",)] = Element(("compile",), "exception", failure)
        elif kind == "script_finished":
            return self._finished(message.script_finished)
        return None

    def _new_run(self, message: ForwardMsg) -> None:
        started = message.new_session
        if started.HasField("initialize"):
            self.session_id = started.initialize.session_id
        if started.HasField("config"):
            self._cache_age = started.config.max_cached_message_age or self._cache_age
        self._run_id = message.metadata.run.script_run_id
        self._run_fragments = tuple(message.metadata.run.fragment_ids)
        self.tree.pop(("compile",), None)
        if not self._run_fragments:  # a whole run registers its fragments' timers again
            self._full_starts += 1
            self._auto.clear()

    def _delta(self, message: ForwardMsg) -> None:
        delta = message.delta
        path = tuple(message.metadata.delta_path)
        kind = delta.WhichOneof("type")
        if kind == "new_element":
            inner = delta.new_element.WhichOneof("type") or "empty"
            proto = getattr(delta.new_element, inner)
        elif kind == "add_block":
            inner, proto = "block", delta.add_block
        else:
            return  # transient elements (spinners, toasts) and added rows change no widget
        if self.tree.get(path) is not None and self.tree[path].kind == "block" and inner != "block":
            self._drop(lambda p, e: p[:len(path)] == path and len(p) > len(path))
        self.tree[path] = Element(path, inner, proto, self._run_id, delta.fragment_id)

    def _drop(self, stale) -> None:
        for path in [p for p, e in self.tree.items() if stale(p, e)]:
            del self.tree[path]

    def _finished(self, status):
        """Tidy up after a run as the browser does; return ``status``."""
        run = self._run_id
        if status == ForwardMsg.FINISHED_SUCCESSFULLY:
            self._drop(lambda p, e: e.run != run)
            self._full_runs += 1
            active = {e.widget_id for e in self.tree.values() if e.widget_id}
            self._widgets = {wid: state for wid, state in self._widgets.items() if wid in active}
            self._cache = {h: entry for h, entry in self._cache.items()
                           if self._full_runs - entry[1] <= self._cache_age}
        elif status == FRAGMENT_DONE:
            fragments = set(self._run_fragments)
            self._drop(lambda p, e: e.fragment in fragments and e.run != run)
        if self._pending is not None and status in (FRAGMENT_DONE, ForwardMsg.FINISHED_SUCCESSFULLY):
            self.fragment_runs.append(Outcome(time.monotonic() - self._pending[1],
                                              "fragment" if status == FRAGMENT_DONE else "ok", self.errors()))
            self._pending = None
        return status

    def _put(self, url: str, name: str, data: bytes) -> None:
        boundary = uuid.uuid4().hex
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: {kind}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        self._http("PUT", url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def _http(self, method: str, url: str, body: bytes | None = None, headers=None) -> None:
        target = urllib.parse.urlsplit(urllib.parse.urljoin(self.base_url + "/", url))
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=self.timeout)
        headers = dict(headers or {})
        if self._xsrf:
            headers.update({"X-Xsrftoken": self._xsrf, "Cookie": f"{XSRF_COOKIE}={self._xsrf}"})
        try:
            connection.request(method, target.path, body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read()[:200]
        except OSError as exc:
            raise ProtocolError(f"{method} {target.path} failed: {exc}") from exc
        finally:
            connection.close()
        if answer.status >= 300:
            raise ProtocolError(f"{method} {target.path} answered {answer.status}: {text!r}")
