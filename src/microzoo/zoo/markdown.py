"""A package's documentation as HTML a zoo page can show: rendered, sanitised, nothing dropped unseen.

:func:`render_markdown` renders CommonMark (with tables and strikethrough; raw HTML allowed, as
READMEs use it) with markdown-it-py, then keeps only the tags, attributes and URL schemes of the
allow-list below with nh3. Relative links and image sources are handed to ``resolve_url`` so the
server can point them at the package's files.

What the sanitiser would remove is listed by :func:`markdown_findings`, from the same rendering
with every link let through: :func:`unsafe_markdown` the unsafe part (script elements, ``on*``
event-handler attributes, ``javascript:``/``vbscript:`` URLs and ``data:`` URLs other than an
image's source), which the zoo refuses
naming the file, and :func:`dropped_markdown` the rest (an ``<iframe>``, a ``style`` attribute),
which the zoo reports as a warning. :func:`unsafe_html` checks an HTML or SVG file of a package
(a QC report, an SVG cover) for the same unsafe constructs, and for documents hidden in an
attribute (``srcdoc``) or a ``<meta http-equiv="refresh">``. This is a second line: the server
should also serve a package's files with ``Content-Security-Policy: sandbox``.

>>> render_markdown("# Nuclei\\n\\n![cover](cover.png)", resolve_url=lambda path: f"/files/{path}")
'<h1>Nuclei</h1>\\n<p><img src="/files/cover.png" alt="cover"></p>\\n'
>>> unsafe_markdown('<img src="x.png" onerror="alert(1)">')
['an event-handler attribute onerror= on <img>']
"""

from __future__ import annotations

import functools
import html.parser
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # markdown-it-py is imported when a document is rendered
    from markdown_it import MarkdownIt

ALLOWED_TAGS = frozenset(
    "a abbr b blockquote br caption code dd del details div dl dt em figcaption figure h1 h2 h3 h4 h5 h6 "
    "hr i img kbd li mark ol p pre s samp small span strong sub summary sup table tbody td tfoot th thead "
    "tr tt u ul".split()
)
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},  # only a fenced block's language (``language-python``): see _LANGUAGE_CLASS
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
    "td": {"style", "colspan", "rowspan"},
    "th": {"style", "colspan", "rowspan"},
    "details": {"open"},
}
#: the one style property kept (markdown-it writes table alignment as ``style="text-align:..."``)
ALLOWED_STYLE_PROPERTIES = frozenset({"text-align"})
ALLOWED_URL_SCHEMES = frozenset({"http", "https", "mailto"})
#: attributes whose value is a URL a browser may follow or load
URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "xlink:href", "data", "poster", "background"})
#: tags whose content is removed with them (the rest keep their text when their tag is dropped)
CLEAN_CONTENT_TAGS = frozenset({"script", "style"})
_LANGUAGE_CLASS = re.compile(r"language-[\w+#.-]+")
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")  # browsers ignore these inside a URL's scheme


def render_markdown(text: str, *, resolve_url: Callable[[str], str] | None = None) -> str:
    """The sanitised HTML of markdown ``text``.

    ``resolve_url(path)`` receives each relative link and image source (no scheme, not a
    fragment, not starting with ``/``) and returns the URL to use; without it they stay as written.
    """
    import nh3

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "class":
            return value if _LANGUAGE_CLASS.fullmatch(value) else None
        if resolve_url is not None and attribute in ("href", "src") and _is_relative(value):
            return resolve_url(value)
        return value

    return nh3.clean(
        _markdown_it(guarded=True).render(text),
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(CLEAN_CONTENT_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=attribute_filter,
        url_schemes=set(ALLOWED_URL_SCHEMES),
        filter_style_properties=set(ALLOWED_STYLE_PROPERTIES),
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
    )


def unsafe_markdown(text: str) -> list[str]:
    """What in markdown ``text`` could run code in a reader's browser, one line each (``[]``: none)."""
    return [what for unsafe, what in markdown_findings(text) if unsafe]


def dropped_markdown(text: str) -> list[str]:
    """What else :func:`render_markdown` leaves out of ``text`` (tags, attributes, URL schemes off the allow-list)."""
    return [what for unsafe, what in markdown_findings(text) if not unsafe]


def markdown_findings(text: str) -> list[tuple[bool, str]]:
    """``(unsafe, what)`` for everything the sanitiser would remove from markdown ``text``, counted once per kind."""
    return _findings(_markdown_it(guarded=False).render(text))


def unsafe_html(text: str) -> list[str]:
    """What in an HTML or SVG document could run code when a browser opens it (``[]``: none)."""
    return [what for unsafe, what in _findings(text) if unsafe]


def _findings(rendered: str) -> list[tuple[bool, str]]:
    scanner = _Scanner()
    scanner.feed(rendered)
    scanner.close()
    return [(unsafe, what if n == 1 else f"{what} ({n} times)") for (unsafe, what), n in scanner.found.items()]


@functools.cache
def _markdown_it(*, guarded: bool) -> MarkdownIt:
    """CommonMark with raw HTML, tables and strikethrough; unguarded: every link URL let through."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    if not guarded:
        md.validateLink = lambda url: True  # type: ignore[method-assign] # show the scanner what a careless renderer would emit
    return md


def _is_relative(url: str) -> bool:
    return bool(url) and not url.startswith(("#", "/", "\\")) and not urlsplit(url).scheme


def _scheme(url: str) -> str:
    cleaned = _URL_NOISE.sub("", url).lower()
    return cleaned.split(":", 1)[0] if ":" in cleaned and "/" not in cleaned.split(":", 1)[0] else ""


class _Scanner(html.parser.HTMLParser):
    """Counts what the allow-list removes; attribute values arrive with character references decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: Counter[tuple[bool, str]] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.found[(True, "a <script> element")] += 1
        elif tag not in ALLOWED_TAGS:
            self.found[(False, f"the element <{tag}> (its text is kept)")] += 1
        for name, value in attrs:
            self._attribute(tag, name, value or "")

    handle_startendtag = handle_starttag

    def _attribute(self, tag: str, name: str, value: str) -> None:
        is_url = name in URL_ATTRIBUTES or name.endswith(":href")
        scheme = _scheme(value)
        if name.startswith("on"):
            self.found[(True, f"an event-handler attribute {name}= on <{tag}>")] += 1
        elif name == "srcdoc" or (tag == "meta" and name == "http-equiv" and value.strip().lower() == "refresh"):
            self.found[(True, f"a document inside an attribute ({name}= on <{tag}>)")] += 1
        elif scheme in ("javascript", "vbscript") or (is_url and scheme == "data" and not _is_image_data(tag, value)):
            # javascript: in any attribute: SVG's <set to=...> and <animate values=...> can turn it into a link
            self.found[(True, f"a {scheme}: URL ({name} on <{tag}>)")] += 1
        elif tag in ALLOWED_TAGS and name not in ALLOWED_ATTRIBUTES.get(tag, ()):
            self.found[(False, f"the attribute {name}= on <{tag}>")] += 1
        elif name == "class" and not _LANGUAGE_CLASS.fullmatch(value):
            self.found[(False, f"the attribute {name}= on <{tag}>")] += 1
        elif is_url and scheme and scheme not in ALLOWED_URL_SCHEMES:
            self.found[(False, f"a {scheme}: URL ({name} on <{tag}>)")] += 1
        elif name == "style" and _style_properties(value) - ALLOWED_STYLE_PROPERTIES:
            properties = ", ".join(sorted(_style_properties(value) - ALLOWED_STYLE_PROPERTIES))
            self.found[(False, f"the style {properties} on <{tag}>")] += 1


def _is_image_data(tag: str, value: str) -> bool:
    """An image inlined as a ``data:`` URL in ``<img src>``: no code runs from it."""
    return tag == "img" and value.lstrip().lower().startswith("data:image/")


def _style_properties(style: str) -> set[str]:
    return {part.split(":", 1)[0].strip().lower() for part in style.split(";") if ":" in part}
