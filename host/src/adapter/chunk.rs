//! Writing OpenAI chat completion chunks (`data: {…}\n\n`), for the translators
//! whose client speaks OpenAI. Serialized from borrowed fields: a text delta costs
//! one small write, no JSON tree.

use serde::Serialize;

/// The chunks of one streamed answer: they share an id, a model and a time.
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    created: u64,
    role_sent: bool,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

/// OpenAI's usage object.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
    }
}

impl ChunkWriter {
    pub fn new(id: String, model: String) -> Self {
        ChunkWriter { id, model, created: super::now_s(), role_sent: false }
    }

    fn write(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish_reason: Option<&str>, usage: Option<Usage>) {
        let choice = [Choice { index: 0, delta, finish_reason }];
        let choices: &[Choice] = if usage.is_some() { &[] } else { &choice };
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        out.extend_from_slice(b"data: ");
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &chunk);
        out.extend_from_slice(b"\n\n");
    }

    /// The first chunk: the assistant's role (written once, before anything else).
    pub fn role(&mut self, out: &mut Vec<u8>) {
        if !std::mem::replace(&mut self.role_sent, true) {
            let delta = Delta { role: Some("assistant"), content: Some(""), ..Delta::default() };
            self.write(out, delta, None, None);
        }
    }

    pub fn content(&mut self, out: &mut Vec<u8>, text: &str) {
        self.role(out);
        self.write(out, Delta { content: Some(text), ..Delta::default() }, None, None);
    }

    /// The start of tool call `index`, with its id and function name.
    pub fn tool_start(&mut self, out: &mut Vec<u8>, index: u32, id: &str, name: &str) {
        self.role(out);
        let call = ToolDelta {
            index,
            id: Some(id),
            kind: Some("function"),
            function: FunctionDelta { name: Some(name), arguments: Some("") },
        };
        self.write(out, Delta { tool_calls: Some([call]), ..Delta::default() }, None, None);
    }

    /// More of tool call `index`'s arguments (JSON text, in pieces).
    pub fn tool_args(&mut self, out: &mut Vec<u8>, index: u32, arguments: &str) {
        self.role(out);
        let call = ToolDelta {
            index,
            id: None,
            kind: None,
            function: FunctionDelta { name: None, arguments: Some(arguments) },
        };
        self.write(out, Delta { tool_calls: Some([call]), ..Delta::default() }, None, None);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        self.role(out);
        self.write(out, Delta::default(), Some(reason), None);
    }

    /// The usage chunk (no choices), as OpenAI sends with `include_usage`.
    pub fn usage(&mut self, out: &mut Vec<u8>, usage: Usage) {
        self.write(out, Delta::default(), None, Some(usage));
    }

    pub fn done(out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}
