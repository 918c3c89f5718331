"""This browser's owner token, and what this session may change (the rule: :mod:`tl.owners`).

The token is random, kept for a year in the cookie ``tl_owner`` so that a reload or a new
tab of the same browser is the same owner. Streamlit reads cookies (``st.context.cookies``,
those sent when the session connected) but cannot set one, so on the first visit a
zero-height iframe of the app's own origin sets it from the browser. Only the token's digest
is written to disk.
"""

import re
import secrets

import streamlit as st

from tl import owners

COOKIE = "tl_owner"
COOKIE_SECONDS = 365 * 24 * 3600
_TOKEN = re.compile(r"[0-9a-f]{32}")
# The iframe's document (about:srcdoc) has the app's origin: Streamlit sandboxes it with
# allow-same-origin. The cookie is written through the app's page itself, its parent, so
# it lands on the app's origin in browsers that keep no cookies for about:srcdoc too.
_SET_COOKIE = """<script>
const page = window.parent || window;
page.document.cookie = "{name}={token}; path=/; max-age={seconds}; SameSite=Lax"
    + (page.location.protocol === "https:" ? "; Secure" : "");
</script>"""


def keep_token() -> None:
    """Make sure this session has an owner token and the browser keeps it. Called on every
    run of the entry point; while the session that found no cookie lasts, every page draws
    the snippet that sets it (setting the same cookie again is harmless)."""
    token()
    if st.session_state.get("owner_cookie_missing"):
        # Out of the layout (display: none still loads the frame and runs its script), so
        # the first visit's page looks like every later one.
        with st.container(key="owner_cookie"):
            st.iframe(_SET_COOKIE.format(name=COOKIE, token=token(), seconds=COOKIE_SECONDS), height=1,
                      tab_index=-1, alt="Keeps this browser's owner token")
        st.html("<style>.st-key-owner_cookie, div:has(> .st-key-owner_cookie) {display: none}</style>")


def token() -> str:
    """This session's owner token: the browser's cookie, else a new one (set by
    :func:`keep_token`)."""
    if "owner_token" not in st.session_state:
        kept = _cookie()
        st.session_state["owner_cookie_missing"] = kept is None
        st.session_state["owner_token"] = kept or secrets.token_hex(16)
    return st.session_state["owner_token"]


def _cookie() -> str | None:
    value = st.context.cookies.get(COOKIE)
    return value if isinstance(value, str) and _TOKEN.fullmatch(value) else None


def digest() -> str:
    """What a run or dataset made by this session records as its owner."""
    return owners.digest(token())


def policy() -> owners.Policy:
    """The deployment's rule: ``$TL_OWNER_SECRET`` or the app's ``owner_secret`` secret,
    and ``$TL_SHARED``. Without a secrets file nothing is read from it."""
    secret = None
    if st.secrets.load_if_toml_exists():
        value = st.secrets.get("owner_secret")
        secret = str(value) if value else None
    return owners.Policy.from_env(secret)


def may_change(owner: str | None) -> bool:
    """Whether this session may delete, stop or edit a thing recorded as ``owner``'s."""
    return owners.may_change(owner, token(), st.session_state.get("owner_secret_given"), policy())


def made_here(owner: str | None) -> bool:
    """On a shared app (owners enforced), whether a thing recorded as ``owner``'s was made
    in this browser; always False elsewhere (nothing is marked or filtered there)."""
    return policy().enforced and owner is not None and owner == digest()


def require(owner: str | None, verb: str = "delete") -> None:
    """Refuse (:class:`tl.owners.NotYours`, a UserError) unless :func:`may_change`: the
    action itself checks, whatever the browser sent."""
    owners.require(owner, token(), st.session_state.get("owner_secret_given"), policy(), verb)


def refusal(owner: str | None, verb: str = "delete") -> str | None:
    """The sentence saying why this session may not ``verb`` it, or ``None`` when it may."""
    return None if may_change(owner) else owners.refusal(owner, verb)


def unlock(key: str) -> None:
    """On a shared deployment, the field where the owner secret unlocks every change for
    the rest of the session (one field: what it unlocks holds on every page)."""
    rule = policy()
    if not rule.enforced:
        return
    if owners.secret_matches(st.session_state.get("owner_secret_given"), rule):
        st.caption("Owner secret given: you can delete and change everything in this session.")
        return
    with st.expander("Manage everything (owner secret)"):
        if not rule.secret:
            st.caption("Each visitor can change only what they made. No owner secret is set (TL_SHARED=1 without "
                       "TL_OWNER_SECRET), so nothing else can be changed from the app.")
            return
        with st.form(f"{key}_owner_form", border=False):
            typed = st.text_input("Owner secret", type="password", key=f"{key}_owner_secret",
                                  help="Set by whoever runs this app; it lets you delete or change anything here.")
            given = st.form_submit_button("Unlock")
        if given:
            if owners.secret_matches(typed, rule):
                st.session_state["owner_secret_given"] = typed
                st.rerun()
            st.error("That is not the owner secret.", icon=":material/lock:")


def guarded_button(label: str, key: str, refused: str | None, action, done: str, **button) -> None:
    """A button that changes something this session may not (``refused``: the sentence
    why, then shown under it and the button disabled); ``action()`` on a click, its
    UserError as one line, else the ``done`` toast."""
    from tl.errors import UserError

    if st.button(label, key=key, disabled=refused is not None, help=refused, **button):
        try:
            action()
        except UserError as exc:
            st.error(str(exc))
        else:
            st.toast(done)
    if refused:
        st.caption(refused)
