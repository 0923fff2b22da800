//! A client connection whose writes must make progress.
//!
//! A client that stops reading (its receive window full) would otherwise hold
//! its connection slot, and the response or event stream waiting for it,
//! for as long as its TCP connection lives. Here a write, flush or shutdown
//! that cannot go on for `timeout` fails with `TimedOut`, and the server
//! drops the connection. The clock starts when the socket first refuses
//! bytes and stops at the next byte it takes, so a slow but moving reader is
//! never cut off.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Since when the socket refuses bytes: the deadline that runs meanwhile.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// What a write that made progress (`Ready`) or none (`Pending`) means.
    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timeout = self.timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", timeout.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that reads nothing: the writes stop, and after the timeout
    /// fail; a peer that reads slowly keeps the writer going.
    #[tokio::test(start_paused = true)]
    async fn a_writer_whose_reader_stopped_gives_up() {
        let (a, b) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(a, Duration::from_secs(10));
        let chunk = [7u8; 4096];
        let started = tokio::time::Instant::now();
        let err = loop {
            if let Err(e) = w.write(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11));

        // A slow reader: 512 bytes every 5 s (half the timeout) is progress.
        let (a, mut slow) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(a, Duration::from_secs(10));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut got = 0;
            while got < 8192 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                got += slow.read(&mut buf).await.unwrap();
            }
            got
        });
        w.write_all(&[1u8; 8192])
            .await
            .expect("a moving reader is never cut off");
        assert!(reader.await.unwrap() >= 8192);
        drop(b);
    }
}
