import { Violations, CONTROL_CHARS } from "@quantix/core";

/** Usernames and service account names: lowercase, as login names are typed. */
export const LOGIN_NAME = /^[a-z][a-z0-9._-]{0,63}$/;
const LOGIN_NAME_WORDS = "must be 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter";
/** Token names. */
const TOKEN_NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/;
/** Project names (the rules of VM names). */
const PROJECT_NAME = /^[a-zA-Z][a-zA-Z0-9_-]{0,63}$/;

/** Checks a username or service account name. */
export function checkLoginName(v: Violations, field: string, name: string): void {
  if (v.required(field, name !== "")) v.pattern(field, name, LOGIN_NAME, LOGIN_NAME_WORDS);
}

/** Checks a token name. */
export function checkTokenName(v: Violations, field: string, name: string): void {
  if (v.required(field, name !== "")) v.pattern(field, name, TOKEN_NAME, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");
}

/** Checks a project name. */
export function checkProjectName(v: Violations, field: string, name: string): void {
  if (v.required(field, name !== "")) v.pattern(field, name, PROJECT_NAME, "must be 1-64 letters, digits, '-' or '_', starting with a letter");
}

/** Checks free text shown to people (display names, descriptions). */
export function checkText(v: Violations, field: string, text: string, max: number): void {
  if (text.length > max) v.add(field, "INVALID_LENGTH", `must be at most ${max} characters long`);
  else if (CONTROL_CHARS.test(text)) v.add(field, "INVALID_FORMAT", "must not contain control characters");
}
