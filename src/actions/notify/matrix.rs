//! A Matrix room: an `m.room.message` (`m.text`, plain and HTML) sent with
//! the client-server API's PUT, named by the delivery's id as its
//! transaction id, so a retry of the same delivery is the same message to
//! the homeserver, never a second one.
//! See <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid>.

use serde_json::json;

use super::Request;
use super::text::{Message, html};
use crate::config::Secret;

/// `homeserver`: its base URL; `room`: a room id (`!abc:example.org`).
pub fn request(homeserver: &url::Url, room: &str, token: &Secret, id: &str, m: &Message) -> Request {
    let mut url = homeserver.clone();
    {
        let Ok(mut path) = url.path_segments_mut() else {
            return Request::json(homeserver.clone(), &json!({}));
        };
        path.pop_if_empty().extend(["_matrix", "client", "v3", "rooms", room, "send", "m.room.message", id]);
    }
    let plain = format!("{}\n{}", m.title, m.lines.join("\n"));
    let mut rich =
        format!("<strong>{}</strong><br>{}", html(&m.title), html(&m.lines.join("\n")).replace('\n', "<br>"));
    if let Some(link) = &m.link {
        rich.push_str(&format!("<br><a href=\"{}\">Open in willwatch</a>", html(link.as_str())));
    }
    let body = json!({"msgtype": "m.text", "body": plain, "format": "org.matrix.custom.html", "formatted_body": rich});
    let mut request = Request::json(url, &body);
    request.put = true;
    request.headers.push(("authorization", format!("Bearer {}", token.expose())));
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_named_by_the_delivery_into_the_room_with_the_token() {
        let m =
            Message { title: "<pump> is offline".into(), lines: vec!["a".into(), "b".into()], alarm: true, link: None };
        let r = request(
            &"https://matrix.example/".parse().unwrap(),
            "!room:example.org",
            &Secret::new("syt_x"),
            "ev-1",
            &m,
        );
        assert!(r.put);
        assert_eq!(
            r.url.as_str(),
            "https://matrix.example/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/ev-1"
        );
        assert!(r.headers.contains(&("authorization", "Bearer syt_x".into())));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["body"], "<pump> is offline\na\nb");
        assert_eq!(body["formatted_body"], "<strong>&lt;pump&gt; is offline</strong><br>a<br>b");
    }
}
