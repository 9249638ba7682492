//! A small HTTP/1.1 client for the root image: `GET` over
//! `std::net::TcpStream`, a body framed by `Content-Length` or `chunked`
//! (RFC 9112 §6-7), no redirects, no TLS, IPv4 literal hosts only (a
//! static init has no resolver). Retries belong to the caller.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://a.b.c.d[:port]/path`.
    #[error("URL {0:?}: {1}")]
    Url(String, &'static str),
    /// Connecting, sending or reading failed.
    #[error("{url}: {operation}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// What was being done.
        operation: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The server answered, but not 200.
    #[error("{url}: server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status line.
        status: String,
    },
    /// The response is not HTTP/1.x as this client reads it.
    #[error("{url}: malformed response: {reason}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

impl HttpError {
    /// Whether trying again may help (the server may come up, a 5xx may pass).
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Url(..) => false,
            HttpError::Io { .. } => true,
            HttpError::Status { status, .. } => status
                .split_whitespace()
                .nth(1)
                .is_some_and(|c| c.starts_with('5')),
            HttpError::Malformed { .. } => true,
        }
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Server address.
    pub addr: SocketAddrV4,
    /// `Host:` header value.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://a.b.c.d[:port][/path]`.
    pub fn parse(url: &str) -> Result<HttpUrl, HttpError> {
        let bad = |why| HttpError::Url(url.to_string(), why);
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported (no TLS in the initrd)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (authority, 80),
        };
        let ip = host
            .parse()
            .map_err(|_| bad("the host must be an IPv4 address (the init has no DNS resolver)"))?;
        Ok(HttpUrl {
            addr: SocketAddrV4::new(ip, port),
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Fetches `url`, every read bounded by `timeout`; returns the body.
pub fn get(url: &str, timeout: Duration) -> Result<Vec<u8>, HttpError> {
    let parsed = HttpUrl::parse(url)?;
    let io = |operation| {
        move |source| HttpError::Io {
            url: url.to_string(),
            operation,
            source,
        }
    };
    let malformed = |reason: String| HttpError::Malformed {
        url: url.to_string(),
        reason,
    };
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::V4(parsed.addr), timeout).map_err(io("connect"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kmodkit-init\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        parsed.path, parsed.host
    );
    stream
        .write_all(request.as_bytes())
        .map_err(io("send request"))?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(io("read status"))?;
    let status = status.trim_end().to_string();
    if !status.starts_with("HTTP/1.") {
        return Err(malformed(format!("status line {status:?}")));
    }
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(HttpError::Status {
            url: url.to_string(),
            status,
        });
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io("read headers"))? == 0 {
            return Err(malformed("connection closed in the headers".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| malformed(format!("Content-Length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader
                .read_line(&mut size_line)
                .map_err(io("read chunk size"))?;
            let size_text = size_line.trim_end().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_text.trim(), 16)
                .map_err(|_| malformed(format!("chunk size {size_text:?}")))?;
            if size == 0 {
                break;
            }
            let before = body.len();
            (&mut reader)
                .take(size)
                .read_to_end(&mut body)
                .map_err(io("read chunk"))?;
            if (body.len() - before) as u64 != size {
                return Err(malformed(format!("a chunk of {size} bytes ended early")));
            }
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).map_err(io("read chunk end"))?;
        }
    } else if let Some(length) = length {
        body.reserve(length.min(1 << 32) as usize);
        (&mut reader)
            .take(length)
            .read_to_end(&mut body)
            .map_err(io("read body"))?;
        if body.len() as u64 != length {
            return Err(malformed(format!(
                "body ended after {} of {length} bytes (Content-Length)",
                body.len()
            )));
        }
    } else {
        reader.read_to_end(&mut body).map_err(io("read body"))?;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(response: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            conn.write_all(response).unwrap();
        });
        format!("http://127.0.0.1:{port}/root.cpio.gz")
    }

    #[test]
    fn content_length_and_chunked() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(get(&url, Duration::from_secs(5)).unwrap(), b"hello");
        let url = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n");
        assert_eq!(get(&url, Duration::from_secs(5)).unwrap(), b"hello");
    }

    #[test]
    fn errors_name_the_cause() {
        let url = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let err = get(&url, Duration::from_secs(5)).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("server answered HTTP/1.1 404 Not Found"),
            "{err}"
        );
        assert!(!err.is_transient());
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort");
        assert!(get(&url, Duration::from_secs(5))
            .unwrap_err()
            .to_string()
            .contains("5 of 9 bytes"));
        assert!(HttpUrl::parse("http://server.example/x").is_err());
    }
}
