/**
 * The frames of GET /v1/events (JSON text, one object per frame): what a
 * client may send, parsed strictly, and the server's frames built once per
 * event so a fan-out serialises each message only once.
 */
import type { MessageStored } from '../../events';
import type { SeqMessageRow } from '../../db/messages';
import { parseId, toWireId } from '../../ids';
import { topLevelNumbers } from '../../http/body';
import { numbersToStrings } from '../../http/openapi';
import { isStorableText } from '../input';

/** `resume`: the client's last seen message (iterator) per chat. */
export interface ResumeFrame {
  type: 'resume';
  chats: [chatId: string, iterator: string][];
}

/** `send`: post a message; answered with `ack` or `error`, both carrying `client_id`. */
export interface SendFrame {
  type: 'send';
  clientId: string;
  chatId: string;
  userId: string;
  message: string;
}

/** A frame the server answers with `{"type":"error","message":"bad-parameters"}` (and `client_id` when it had a usable one). */
export interface BadFrame {
  type: 'bad';
  clientId?: string;
}

export type ClientFrame = ResumeFrame | SendFrame | BadFrame;

/**
 * At most this many chats in one `resume` frame (as many as one page of the
 * chat list, GET /v1/chats?limit=1000). The chats are read 50 to a
 * statement with their first replay (db/messages.ts, resumeReplays): 10,000
 * chats read one by one held the connection's frames for 3.3 s of database
 * work.
 */
export const MAX_RESUME_CHATS = 1000;

const CLIENT_ID = /^[\x20-\x7e]{1,255}$/;

/** The text fields of `send`; a JSON number in one becomes the text written, as over HTTP. */
const SEND_TEXT_FIELDS = ['client_id', 'chat_id', 'user_id', 'message'];

/** A string field (numbers were turned into their written text before). */
function text(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Parses one text frame from a client; anything that is not exactly a known frame is `bad`. */
export function parseClientFrame(data: string): ClientFrame {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return { type: 'bad' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { type: 'bad' };
  const f = v as Record<string, unknown>;
  if (f.type === 'resume') {
    const chats = f.chats;
    if (typeof chats !== 'object' || chats === null || Array.isArray(chats)) return { type: 'bad' };
    const entries = Object.entries(chats as Record<string, unknown>);
    if (entries.length > MAX_RESUME_CHATS || entries.some(([, it]) => typeof it !== 'string')) return { type: 'bad' };
    // Chat ids in their wire form (32 lower-case hex), the key connections are
    // indexed by: a dashed or upper-case spelling must hold the same chat's
    // live messages while it replays (else they flow live, then come again in
    // the replay). A malformed id stays as sent (answered chat-not-found);
    // two spellings of one chat count once, the last iterator given wins.
    const canonical = new Map<string, string>();
    for (const [chatId, iterator] of entries as [string, string][]) {
      const id = parseId(chatId);
      canonical.set(id === null ? chatId : toWireId(id), iterator);
    }
    return { type: 'resume', chats: [...canonical] };
  }
  if (f.type === 'send') {
    // HTTP's mechanism, so `12345678901234567890` and `1e21` are kept as written, not rounded or respelled.
    numbersToStrings(f, SEND_TEXT_FIELDS, topLevelNumbers(data));
    const clientId = text(f.client_id);
    if (clientId === undefined || !CLIENT_ID.test(clientId)) return { type: 'bad' };
    const chatId = text(f.chat_id);
    const userId = text(f.user_id);
    const message = text(f.message);
    if (chatId === undefined || userId === undefined || message === undefined || !isStorableText(message)) {
      return { type: 'bad', clientId };
    }
    return { type: 'send', clientId, chatId, userId, message };
  }
  return { type: 'bad' };
}

/** A `message` frame from the live event. */
export function messageFrame(e: MessageStored): string {
  return JSON.stringify({
    type: 'message',
    chat_id: e.chatId,
    message_id: e.messageId,
    user_id: e.userId,
    user_name: e.userName,
    text: e.text,
    created_at: e.createdAt,
  });
}

/** The live event's shape for a message read back from the database (replay, gap repair). */
export function storedFromRow(chatId: string, row: SeqMessageRow): MessageStored {
  return {
    chatId,
    messageId: toWireId(row.id),
    userId: toWireId(row.member_id),
    userName: row.user_name,
    accountId: null,
    text: row.text,
    createdAt: row.created_at.toISOString(),
    seq: row.seq,
  };
}

/** Any other server frame. */
export function frame(type: string, fields: Record<string, unknown>): string {
  return JSON.stringify({ type, ...fields });
}
