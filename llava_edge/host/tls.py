"""The TLS trust store of outbound HTTPS (image URLs, webhooks, uploads): the operating system's.

On Linux the standard library's default context already reads the system store (``/etc/ssl``). On macOS
it does not: python.org's Python ships an OpenSSL with no certificates until its "Install Certificates"
script is run, and Homebrew's reads Homebrew's bundle, not the Keychain. There ``truststore`` verifies
through the Security framework, so a certificate the Keychain trusts (a company's own CA included) works.
"""

from __future__ import annotations

import ssl
import sys


def tls_context(platform: str = sys.platform) -> ssl.SSLContext:
    """A client context that checks certificates and host names against the system's trust store."""
    if platform == "darwin":
        import truststore

        context: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return context
    return ssl.create_default_context()
