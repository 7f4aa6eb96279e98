//! Channel handles. SKELETON.

use std::sync::Arc;

/// A channel. SKELETON.
#[derive(Clone)]
pub struct Channel {
    pub(crate) uid: u64,
    pub(crate) id: i32,
    pub(crate) _inner: Arc<()>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Channel id={}>", self.id)
    }
}

impl PartialEq for Channel {
    fn eq(&self, other: &Self) -> bool {
        self.uid == other.uid && self.id == other.id
    }
}

impl Channel {
    /// The channel id.
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(crate::wire::CHANNEL_TOKEN, &(self.uid, self.id))
    }
}

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Channel;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a channel")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Channel, D::Error> {
                let (uid, id) = <(u64, i32)>::deserialize(d)?;
                super::lookup_channel(uid, id).map_err(serde::de::Error::custom)
            }
        }
        use serde::Deserialize;
        d.deserialize_newtype_struct(crate::wire::CHANNEL_TOKEN, V)
    }
}
