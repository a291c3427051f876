//! The protobuf codec of dialogd's services: prost's, except that a
//! message that does not decode (malformed bytes, nesting past prost's
//! recursion limit) is the sender's fault — INVALID_ARGUMENT saying why —
//! where tonic's default answers INTERNAL, telling a caller the server
//! broke. Generated clients (tests, `dialogd chat`) share it.

use crate::failure::Failure;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

pub struct DialogdCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for DialogdCodec<T, U> {
    fn default() -> Self {
        DialogdCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for DialogdCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(self.0.decoder())
    }
}

pub struct CheckedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|e| {
            let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or("");
            Failure::invalid(
                "request",
                format!("is not a valid {name} message: {}", e.message()),
            )
            .into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
