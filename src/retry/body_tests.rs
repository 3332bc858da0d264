use std::collections::VecDeque;
use std::convert::Infallible;

use http_body_util::BodyExt;

use super::*;

/// A body made of chunks and optional trailers.
struct Chunks {
    frames: VecDeque<Frame<Bytes>>,
}

fn chunks(parts: &[&'static str], trailers: bool) -> Chunks {
    let mut frames: VecDeque<_> = parts
        .iter()
        .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
        .collect();
    if trailers {
        let mut map = HeaderMap::new();
        map.insert("x-checksum", "abc".parse().unwrap());
        frames.push_back(Frame::trailers(map));
    }
    Chunks { frames }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }
}

async fn read_all<B>(body: B) -> (Bytes, Option<HeaderMap>)
where
    B: Body<Data = Bytes>,
    B::Error: fmt::Debug,
{
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn every_replay_sends_the_same_bytes_and_trailers() {
    let first = ReplayBody::new(chunks(&["a", "bc", "def"], true), 1024);
    let second = first.try_clone_body().unwrap();
    let (bytes, trailers) = read_all(first).await;
    assert_eq!(bytes, "abcdef");
    assert_eq!(trailers.unwrap()["x-checksum"], "abc");
    let third = second.try_clone_body().unwrap();
    assert_eq!(read_all(second).await.0, "abcdef");
    let (bytes, trailers) = read_all(third).await;
    assert_eq!(bytes, "abcdef");
    assert!(trailers.is_some());
}

#[tokio::test]
async fn a_replay_continues_where_a_dropped_attempt_stopped() {
    let mut first = ReplayBody::new(chunks(&["a", "b", "c"], false), 1024);
    let retry = first.try_clone_body().unwrap();
    // The first attempt's transport read one chunk, then the connection broke.
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "a");
    drop(first);
    assert!(retry.is_replayable());
    assert_eq!(read_all(retry).await.0, "abc");
}

#[tokio::test]
async fn a_body_over_the_limit_is_not_replayable() {
    let first = ReplayBody::new(chunks(&["0123456789", "0123456789"], false), 15);
    let early = first.try_clone_body().unwrap();
    assert_eq!(read_all(first).await.0, "01234567890123456789");
    assert!(!early.is_replayable());
    assert!(early.try_clone_body().is_none());
    // A handle taken before the overflow cannot produce the dropped chunks.
    let err = early.collect().await.unwrap_err();
    assert!(matches!(err, ReplayError::Lost), "{err}");
}

#[tokio::test]
async fn the_limit_is_inclusive_and_empty_bodies_replay() {
    let first = ReplayBody::new(chunks(&["12345"], false), 5);
    assert_eq!(read_all(first.try_clone_body().unwrap()).await.0, "12345");
    assert!(first.is_replayable());
    let empty = ReplayBody::new(chunks(&[], false), 0);
    let again = empty.try_clone_body().unwrap();
    assert_eq!(read_all(empty).await.0, "");
    assert!(again.is_replayable());
    assert_eq!(read_all(again).await.0, "");
}

/// A body that sends one chunk, fails, then — polled again — says it is over.
struct Flaky {
    step: u8,
}

impl Body for Flaky {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.step += 1;
        Poll::Ready(match self.step {
            1 => Some(Ok(Frame::data(Bytes::from_static(b"part")))),
            2 => Some(Err(std::io::ErrorKind::ConnectionReset.into())),
            _ => None,
        })
    }
}

#[tokio::test]
async fn a_copy_of_a_body_that_failed_fails_too_never_ends_short() {
    let first = ReplayBody::new(Flaky { step: 0 }, 1024);
    let copy = first.try_clone_body().unwrap();
    let err = first.collect().await.unwrap_err();
    assert!(matches!(err, ReplayError::Body(_)), "{err}");
    assert!(!copy.is_replayable());
    // The copy replays what was read, then fails: it is never a shorter body that ends.
    let err = copy.collect().await.unwrap_err();
    assert!(matches!(err, ReplayError::Lost), "{err}");
}

/// A body whose chunks come from a channel: pending until one is sent.
struct Channel(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// One task reading two copies at once (`join!`): a chunk that one copy takes still wakes
/// the task for the other.
#[tokio::test]
async fn one_task_reading_two_copies_is_woken_for_both() {
    use http_body_util::BodyExt as _;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let first = ReplayBody::new(Channel(rx), 1024);
    let second = first.try_clone_body().unwrap();
    let reading = async { tokio::join!(first.collect(), second.collect()) };
    let sending = async {
        tokio::task::yield_now().await;
        tx.send(Bytes::from_static(b"a")).unwrap();
        tokio::task::yield_now().await;
        drop(tx);
    };
    let within = std::time::Duration::from_secs(5);
    let ((a, b), ()) = tokio::time::timeout(within, async { tokio::join!(reading, sending) })
        .await
        .expect("a copy was never woken");
    assert_eq!(a.unwrap().to_bytes(), "a");
    assert_eq!(b.unwrap().to_bytes(), "a");
}

/// Two attempts waiting at once for the original body (a retry that started while the first
/// attempt still streams): a chunk wakes both, not only the last to poll.
#[tokio::test]
async fn every_handle_waiting_for_the_body_is_woken() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let first = ReplayBody::new(Channel(rx), 1024);
    let second = first.try_clone_body().unwrap();
    let read = |mut body: ReplayBody<Channel>| {
        tokio::spawn(async move { body.frame().await.unwrap().unwrap().into_data().unwrap() })
    };
    let a = read(first);
    tokio::task::yield_now().await;
    let b = read(second);
    // Both are waiting now: the first polled, then the second.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    tx.send(Bytes::from_static(b"chunk")).unwrap();
    let within = std::time::Duration::from_secs(5);
    let a = tokio::time::timeout(within, a)
        .await
        .expect("the first was woken");
    let b = tokio::time::timeout(within, b)
        .await
        .expect("the second was woken");
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (Bytes::from("chunk"), Bytes::from("chunk"))
    );
}
