//! A plugin claiming to be built for another WIT version (as if by a future SDK):
//! the gateway must refuse it before compiling.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct WrongVersion;

impl Strategy for WrongVersion {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(WrongVersion)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        ctx.usable()
    }
}

berry_plugin_sdk::export_strategy!(WrongVersion);

#[unsafe(link_section = "berry:sdk-version")]
#[used]
static FUTURE_STAMP: [u8; 5] = *b"0.9.0";
