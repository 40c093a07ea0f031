// wechat-broadcast console: plain JavaScript, no build step, no CDN. Every action calls the same /v1 routes
// as the `broadcast` CLI with the bearer token typed once (sessionStorage: gone when the tab closes, never
// in a URL). Live numbers come from polling every POLL_MS while the page is visible.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "broadcast.token";
const LANG_KEY = "broadcast.lang";

const I18N = {
  zh: {
    console: "控制台", nav_campaigns: "群发", nav_new: "新建群发", nav_accounts: "账号", nav_dead: "死信",
    nav_schedules: "定时任务", logout: "退出", login_title: "输入 API token", token: "Token", login: "登录",
    login_hint: "与命令行相同的 BROADCAST_API_TOKEN，或管理员创建的操作密钥（broadcast keys create）。只保存在本浏览器标签页的会话中，关闭标签页即清除。",
    bad_token: "Token 无效或已过期，请重新输入。", field: "字段",
    campaigns: "群发", name: "名称", id: "ID", status: "状态", progress: "进度", sent: "已发送",
    dead: "死信", remaining: "剩余", cancelled: "已取消", rate: "速率", eta: "预计剩余时间", created: "创建时间",
    actions: "操作", pause: "暂停", resume: "恢复", cancel: "取消", total: "总数", accounts: "账号",
    no_campaigns: "还没有群发。", new_campaign: "新建群发", per_s: "条/秒", deliveries: "发送明细",
    all_statuses: "全部状态", to: "接收人", account: "账号", attempts: "尝试次数", new_msg_id: "newMsgId",
    msg_id: "msgId", sent_at: "发送时间", error: "错误", prev: "上一页", next: "下一页",
    export_csv: "导出 CSV", export_jsonl: "导出 JSONL", back: "返回列表", confirm_cancel: "取消该群发中所有未发送的消息？",
    st_active: "发送中", st_paused: "已暂停", st_scheduled: "已预约", st_finished: "已完成", st_cancelled: "已取消",
    st_queued: "排队中", st_sending: "发送中", st_sent: "已发送", st_retrying: "重试中", st_dead: "死信",
    st_down: "掉线", acc_active: "正常", priority: "优先级", normal: "普通", high: "高", send_at: "定时发送（可选）",
    send_at_hint: "留空立即发送；按本机时区解释", message_kind: "消息类型", kind_text: "文本",
    kind_mini: "小程序（字段）", kind_mini_xml: "小程序（粘贴 XML）", kind_appmsg: "应用消息（粘贴 XML：链接、文件、视频号）",
    kind_image: "图片（海报）", kind_file: "文件（如报价单 PDF）", kind_link: "链接卡片", kind_sequence: "组合消息（依次发送，最多 5 条）",
    media_url: "URL（服务商自行下载）", file_name: "文件名（接收人看到的）", link_title: "标题", link_description: "描述",
    link_url: "链接", thumb_url: "缩略图 URL（png/jpg，50 KB 以内）", sequence_json: "组合消息 JSON",
    sequence_hint: "parts 依次发给同一接收人，每条之间保持账号的发送间隔；某条失败则其余跳过",
    carried_by: "可发送此消息的服务商", carried_none: "没有服务商能发送此消息", part: "第 {n} 条",
    text: "文本内容", text_hint: "{name} 等占位符由 CSV 的同名列填充；按通讯录发送时 {name}（备注，无备注用昵称）、{nickname}、{remark} 取自联系人", mentions: "@ 的成员 wxid（逗号分隔）",
    mention_all: "@所有人", xml: "XML", cover_url: "封面图 URL", recipients_csv: "接收人文件（CSV 或 JSONL）",
    csv_hint: "CSV 表头：to, account（可选）, 其他列作为变量", preview: "预览（前 5 行）", rows: "行",
    rendered: "第一位接收人看到的内容", check: "校验结果", extracted: "提取出的 <appmsg>", submit: "提交群发",
    pick_account: "至少选择一个账号", pick_file: "请选择接收人文件", created_ok: "已创建群发",
    vendor: "服务商", reason: "原因", limits: "限速", per_minute: "每分钟", daily_cap: "每日上限",
    today: "今日已发", token_set: "Token", edit: "编辑", save: "保存", close: "关闭", unlimited: "不限",
    min_interval_s: "最小间隔（秒）", jitter_s: "随机抖动（秒）", new_token: "新 Token（只写，不会显示；留空不变）",
    edit_account: "编辑账号", saved: "已保存", set: "已设置", not_set: "未设置", no_accounts: "还没有账号。",
    dead_letters: "死信", filter: "筛选", campaign: "群发 ID", error_class: "错误类别", dead_at: "进入死信时间",
    replay: "重发", delete: "删除", history: "尝试记录", no_dead: "没有死信。", any_reason: "全部原因",
    dr_permanent: "服务商拒绝（不会重试）", dr_retries_exhausted: "重试用尽", dr_unknown_outcome: "结果未知（可能已发出）",
    dr_invalid_message: "消息无法构建", dr_account_missing: "账号已删除", dr_sequence_stopped: "序列中断",
    h_event: "事件", h_at: "时间",
    nav_supp: "退订名单", supp_title: "退订名单（不再发送）", no_supp: "名单为空。", add_supp: "加入名单", note: "备注",
    every_account: "全部账号（留空）", lift: "移出", confirm_lift: "移出后该联系人会再次收到消息，确定？", lifted: "已移出",
    held_title: "暂存的回调变更", held_hint: "此账号的服务商回调在一小时内要加入的退订超过上限（BROADCAST_CALLBACK_CHANGES_PER_H），以下变更已暂存、尚未生效；核对后可应用，7 天后自动过期。",
    held_apply: "全部应用", held_applied: "已应用", held_from: "对象", held_received: "收到时间", confirm_held: "把这些暂存的变更加入退订名单？",
    supp_added: "已加入", by: "来源", since: "时间", st_skipped: "已跳过", skipped: "已跳过",
    skip_suppressed: "在退订名单中", skip_frequency_cap: "超过频率上限",
    r_opted_out: "回复退订", r_not_friend: "非好友", r_contact_removed: "已删除联系人", r_manual: "手动",
    confirm_force: "该消息的发送结果未知（请求可能已到达服务商），重发可能导致对方收到两次。确认强制重发？",
    confirm_delete: "从死信列表中删除？（发送记录保留）", replayed: "已重新排队", deleted: "已删除",
    schedules: "定时任务", cron: "Cron 表达式", timezone: "时区", next_at: "下次触发", fires: "已触发次数",
    last_result: "上次结果", kind: "类型", new_schedule: "新建定时任务", create: "创建", no_schedules: "没有定时任务。",
    next_firings: "接下来的触发时间", template_json: "消息 JSON（account, to, message）",
    cron_hint: "5 段（分 时 日 月 周），或 6 段（最后一段为秒）", schedule_created: "已创建定时任务",
    confirm_delete_schedule: "删除该定时任务？", schedule_kind_message: "单条消息", schedule_kind_campaign: "群发",
    refresh_note: "每 2 秒自动刷新", loading: "加载中…", checking: "校验中…", check_ok: "校验通过",
    st_draft: "草稿", draft: "存为草稿（不发送；先测试发送，再启动）", start: "启动", confirm_start: "启动该群发？将开始向全部接收人发送。",
    started: "已启动", test_send: "测试发送", test_to: "测试接收人 wxid（逗号分隔，最多 10 个；用第一位接收人的变量渲染）",
    test_queued: "测试消息已排队", tests: "测试发送", tests_summary: "已测试 {n} 次，{sent} 条已送达",
    pause_reason: "自动暂停原因", paused_because: "暂停原因", auto_pause: "出错自动暂停",
    recall: "撤回", recall_title: "撤回进度", recall_col: "撤回",
    confirm_recall: "撤回该群发？会先停止发送（等同取消），再撤回所有仍在撤回时限内（默认为服务商记录的发送时间 createTime 之后 110 秒）已发出的消息，每条只撤回一次。",
    rc_requested: "已申请", rc_recalled: "已撤回", rc_too_late: "超过撤回时限", rc_unsupported: "不支持撤回",
    rc_failed: "撤回失败", rc_pending: "待撤回",
    src_file: "从文件", src_audience: "从账号通讯录（好友、标签、群）", audience: "受众",
    labels_any: "包含标签（任一）", exclude_labels: "排除标签", aud_friends: "好友", aud_groups: "所有群",
    aud_total: "将发送给 {n} 人", aud_dup: "{n} 人由排在前面的账号发送", aud_excl: "已排除 {n} 人",
    aud_age: "{acct}：{n} 人，通讯录同步于 {age} 前", aud_first: "前几位接收人", not_synced: "该账号尚未同步通讯录", aud_err: "无法预览接收人",
    aud_err_empty: "没有符合条件的接收人", aud_err_label: "所选账号没有这个标签",
    err_400: "请求格式有误", err_403: "当前密钥的角色无权执行此操作", err_404: "未找到", err_409: "当前状态下无法执行",
    err_413: "内容过大", err_422: "输入有误", err_429: "请求过于频繁，请稍后再试", err_5xx: "服务暂时不可用",
    err_account_offline: "账号离线", err_token_required: "修改地址需要重新输入 token", err_key_exists: "同名密钥已存在",
    err_idempotency_conflict: "幂等键已用于另一个请求", err_account_busy: "账号正忙（正在发送或同步）",
    aud_err_placeholder: "消息里有通讯录无法填写的占位符（通讯录只有 {name} 等联系人字段）",
    pick_audience: "请选择受众", contacts: "通讯录", sync_contacts: "同步通讯录", sync_started: "已开始同步通讯录",
    cs_never: "未同步", cs_running: "同步中", cs_done: "已同步", cs_failed: "同步失败", cs_cancelled: "已取消",
    friends_n: "好友", groups_n: "群", minutes: "分钟", seconds: "秒",
    nav_overview: "概览", nav_audit: "审计", overview: "运行概览", fleet_sends: "全部账号每分钟发送（最近 {h} 小时）",
    fleet_dead: "每分钟新增死信（最近 {h} 小时）", dead_waiting: "待处理死信", health: "账号健康",
    per_min_chart: "每分钟发送与失败", retried: "重试", no_data: "暂无数据", last_errors: "最近错误", none: "无",
    audit: "操作审计", audit_hint: "每个改变状态的请求：谁（密钥名称与角色）、何时、做了什么、结果",
    at: "时间", key: "密钥", role: "角色", action: "操作", target: "对象", result: "结果", older: "更早",
    history_title: "操作记录", no_audit: "没有记录。", needs_role: "需要“{role}”角色（当前密钥为“{mine}”）",
    role_viewer: "只读", role_operator: "操作员", role_admin: "管理员", role_callback: "服务商回调", role_worker: "发送进程（自动）", signed_in_as: "当前密钥",
    by_callback: "服务商回调", by_vendor: "服务商拒绝发送", by_bootstrap: "初始令牌",
    hours: "小时", cap: "上限", axis_tz: "横轴时间：{tz}",
  },
  en: {
    console: "console", nav_campaigns: "Campaigns", nav_new: "New campaign", nav_accounts: "Accounts",
    nav_dead: "Dead letters", nav_schedules: "Schedules", logout: "Log out", login_title: "Enter the API token",
    token: "Token", login: "Log in",
    login_hint: "The same BROADCAST_API_TOKEN the CLI uses, or an operator key an admin created (broadcast keys create). Kept only in this tab's session storage; closing the tab forgets it.",
    bad_token: "The token is invalid or expired; enter it again.", field: "field",
    campaigns: "Campaigns", name: "Name", id: "ID", status: "Status", progress: "Progress", sent: "Sent",
    dead: "Dead", remaining: "Remaining", cancelled: "Cancelled", rate: "Rate", eta: "ETA", created: "Created",
    actions: "Actions", pause: "Pause", resume: "Resume", cancel: "Cancel", total: "Total", accounts: "Accounts",
    no_campaigns: "No campaigns yet.", new_campaign: "New campaign", per_s: "/s", deliveries: "Deliveries",
    all_statuses: "All statuses", to: "To", account: "Account", attempts: "Attempts", new_msg_id: "newMsgId",
    msg_id: "msgId", sent_at: "Sent at", error: "Error", prev: "Previous", next: "Next",
    export_csv: "Export CSV", export_jsonl: "Export JSONL", back: "Back to list",
    confirm_cancel: "Cancel every unsent message of this campaign?",
    st_active: "sending", st_paused: "paused", st_scheduled: "scheduled", st_finished: "finished",
    st_cancelled: "cancelled", st_queued: "queued", st_sending: "sending", st_sent: "sent", st_retrying: "retrying",
    st_dead: "dead", st_down: "down", acc_active: "active", priority: "Priority", normal: "normal", high: "high",
    send_at: "Send at (optional)", send_at_hint: "Empty sends now; read in this computer's timezone",
    message_kind: "Message kind", kind_text: "Text", kind_mini: "Mini-program (fields)",
    kind_mini_xml: "Mini-program (pasted XML)", kind_appmsg: "App message (pasted XML: link, file, video channel)",
    kind_image: "Image (poster)", kind_file: "File (e.g. a PDF price list)", kind_link: "Link card",
    kind_sequence: "Sequence (sent in order, up to 5 messages)", media_url: "URL (the vendor fetches it)",
    file_name: "File name (what the recipient sees)", link_title: "Title", link_description: "Description",
    link_url: "Link", thumb_url: "Thumbnail URL (png/jpg under 50 KB)", sequence_json: "Sequence JSON",
    sequence_hint: "The parts go to the same recipient in order, the account's gap between them; if one fails, the rest are skipped",
    carried_by: "Vendors that can send it", carried_none: "No vendor can send this message", part: "Part {n}",
    text: "Text", text_hint: "Placeholders like {name} are filled from the CSV column of that name; for an audience, {name} (remark, else nickname), {nickname} and {remark} come from the contact",
    mentions: "Mention wxids (comma-separated)", mention_all: "Mention everyone", xml: "XML",
    cover_url: "Cover image URL", recipients_csv: "Recipients file (CSV or JSONL)",
    csv_hint: "CSV header: to, account (optional), other columns are variables", preview: "Preview (first 5 rows)",
    rows: "rows", rendered: "What the first recipient sees", check: "Check", extracted: "Extracted <appmsg>",
    submit: "Submit campaign", pick_account: "Pick at least one account", pick_file: "Choose a recipients file",
    created_ok: "Campaign created", vendor: "Vendor", reason: "Reason", limits: "Limits", per_minute: "Per minute",
    daily_cap: "Daily cap", today: "Sent today", token_set: "Token", edit: "Edit", save: "Save", close: "Close",
    unlimited: "no cap", min_interval_s: "Min interval (s)", jitter_s: "Jitter (s)",
    new_token: "New token (write-only, never shown; empty keeps it)", edit_account: "Edit account", saved: "Saved",
    set: "set", not_set: "not set", no_accounts: "No accounts yet.", dead_letters: "Dead letters", filter: "Filter",
    campaign: "Campaign id", error_class: "Error class", dead_at: "Dead at", replay: "Replay", delete: "Delete",
    history: "Attempt history", no_dead: "No dead letters.", any_reason: "Any reason",
    dr_permanent: "refused by the vendor (not retried)", dr_retries_exhausted: "retries exhausted",
    dr_unknown_outcome: "unknown outcome (may have been sent)", dr_invalid_message: "message cannot be built",
    dr_account_missing: "account deleted", dr_sequence_stopped: "sequence stopped",
    h_event: "Event", h_at: "At",
    nav_supp: "Suppressions", supp_title: "Suppression list (never messaged)", no_supp: "The list is empty.",
    add_supp: "Add", note: "Note", every_account: "every account (leave empty)", lift: "Remove",
    confirm_lift: "They will receive messages again. Remove from the list?", lifted: "Removed", supp_added: "Added",
    held_title: "Held callback changes", held_hint: "This account's vendor callbacks asked for more new suppressions in an hour than the cap (BROADCAST_CALLBACK_CHANGES_PER_H): the changes below are held, not applied. Check them, then apply them; they expire after 7 days.",
    held_apply: "Apply all", held_applied: "Applied", held_from: "Who", held_received: "Received", confirm_held: "Add these held changes to the suppression list?",
    by: "By", since: "Since", st_skipped: "skipped", skipped: "Skipped",
    skip_suppressed: "suppressed", skip_frequency_cap: "over the frequency cap",
    r_opted_out: "opted out", r_not_friend: "not a friend", r_contact_removed: "contact removed", r_manual: "manual",
    confirm_force: "The outcome of this send is unknown (the request may have reached the vendor): replaying may deliver it twice. Force the replay?",
    confirm_delete: "Delete from the dead letters? (the delivery record stays)", replayed: "Queued again",
    deleted: "Deleted", schedules: "Schedules", cron: "Cron", timezone: "Timezone", next_at: "Next firing",
    fires: "Fired", last_result: "Last result", kind: "Kind", new_schedule: "New schedule", create: "Create",
    no_schedules: "No schedules.", next_firings: "Next firings", template_json: "Message JSON (account, to, message)",
    cron_hint: "5 fields (minute hour day month weekday), or 6 with seconds last", schedule_created: "Schedule created",
    confirm_delete_schedule: "Delete this schedule?", schedule_kind_message: "message",
    schedule_kind_campaign: "campaign", refresh_note: "refreshes every 2 s", loading: "Loading…",
    checking: "Checking…", check_ok: "Valid",
    st_draft: "draft", draft: "Save as draft (sends nothing; test it, then start)", start: "Start",
    confirm_start: "Start this campaign? It begins sending to every recipient.", started: "Started",
    test_send: "Test send", test_to: "Test recipients' wxids (comma-separated, at most 10; rendered with the first recipient's variables)",
    test_queued: "Test messages queued", tests: "Test sends", tests_summary: "tested {n} time(s), {sent} delivered",
    pause_reason: "Paused itself because", paused_because: "Paused because", auto_pause: "Auto-pause on errors",
    recall: "Recall", recall_title: "Recall", recall_col: "Recall",
    confirm_recall: "Recall this campaign? It stops sending first (a cancel), then revokes every message it sent that is still inside the revoke window (by default 110 s after the vendor's createTime), each once.",
    rc_requested: "asked", rc_recalled: "recalled", rc_too_late: "too late", rc_unsupported: "unsupported",
    rc_failed: "failed", rc_pending: "pending",
    src_file: "From a file", src_audience: "From the accounts' contacts (friends, labels, groups)", audience: "Audience",
    labels_any: "With any of these labels", exclude_labels: "Without these labels", aud_friends: "Friends",
    aud_groups: "Every group", aud_total: "Reaches {n} recipients", aud_dup: "{n} reached by an earlier account",
    aud_excl: "{n} excluded", aud_age: "{acct}: {n} recipients, contacts synced {age} ago", aud_first: "First recipients",
    not_synced: "this account has not synced its contacts", aud_err: "Cannot preview the recipients",
    aud_err_empty: "No recipient matches", aud_err_label: "The chosen accounts have no such label",
    err_400: "Malformed request", err_403: "This key's role may not do that", err_404: "Not found",
    err_409: "Not possible in the current state", err_413: "Too large", err_422: "Invalid input",
    err_429: "Too many requests, try again shortly", err_5xx: "Service unavailable",
    err_account_offline: "Account offline", err_token_required: "A new address needs the token entered again",
    err_key_exists: "A key with this name exists", err_idempotency_conflict: "Idempotency key used for another request",
    err_account_busy: "Account busy (sending or syncing)",
    aud_err_placeholder: "The message has placeholders the contacts cannot fill (contacts give {name} and the like)", pick_audience: "Choose an audience", contacts: "Contacts",
    sync_contacts: "Sync contacts", sync_started: "Contact sync started",
    cs_never: "never synced", cs_running: "syncing", cs_done: "synced", cs_failed: "sync failed", cs_cancelled: "cancelled",
    friends_n: "friends", groups_n: "groups", minutes: "min", seconds: "s",
    nav_overview: "Overview", nav_audit: "Audit", overview: "Overview", fleet_sends: "Sends per minute, all accounts (last {h} h)",
    fleet_dead: "New dead letters per minute (last {h} h)", dead_waiting: "Dead letters waiting", health: "Account health",
    per_min_chart: "Sends and failures per minute", retried: "Retried", no_data: "No data yet", last_errors: "Latest errors",
    none: "none", audit: "Audit trail", audit_hint: "Every state-changing request: who (key name and role), when, what, and the result",
    at: "At", key: "Key", role: "Role", action: "Action", target: "Target", result: "Result", older: "Older",
    history_title: "History", no_audit: "Nothing recorded.", needs_role: "Needs the {role} role (this key is {mine})",
    role_viewer: "viewer", role_operator: "operator", role_admin: "admin", role_callback: "vendor callback", role_worker: "worker (automatic)", signed_in_as: "Key",
    by_callback: "vendor callback", by_vendor: "vendor refusal", by_bootstrap: "bootstrap token",
    hours: "h", cap: "cap", axis_tz: "time axis: {tz}",
  },
};

// audit action codes in the reader's words, {code: [Chinese, English]}: one table for the console and the CLI
// (audit_actions.json beside this file), loaded before the first page; the code stays on the page under the label
let AUDIT_ACTIONS = {};
const auditActionsLoaded = fetch("/console/static/audit_actions.json")
  .then((r) => (r.ok ? r.json() : {}))
  .then((table) => { AUDIT_ACTIONS = table; })
  .catch(() => {}); // without it a code is shown as recorded

let lang = localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
const t = (key) => (I18N[lang][key] ?? I18N.zh[key] ?? key);
// an audit action's label in the reader's language; a code this page does not know yet stays as recorded
const actionLabel = (code) => (Object.hasOwn(AUDIT_ACTIONS, code) ? AUDIT_ACTIONS[code][lang === "zh" ? 0 : 1] : code);
// a role's name in the reader's language; a role this page does not know stays as recorded (never "role_…")
const roleLabel = (role) => (I18N.zh["role_" + role] ? t("role_" + role) : role);
// why an audience preview failed, in the reader's words (the API's own text is shown under it)
const audienceErrorText = (error) => {
  if (error.code === "contacts_not_synced") return t("not_synced");
  if (/resolves to no recipient/.test(error.message)) return t("aud_err_empty");
  if (/has a label/.test(error.message)) return t("aud_err_label");
  if (/placeholder/.test(error.message)) return t("aud_err_placeholder");
  return t("aud_err");
};

// a delivery's skip_reason in the reader's words (a reason this page does not know yet stays as sent)
const skipText = (reason) => I18N[lang]["skip_" + reason] ?? reason;
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// invisible characters are shown as \uXXXX (a UTF-16 pair past U+FFFF), as the CLI does: by Unicode category
// (controls but tab and line feed, format characters such as bidi overrides, zero-width and tag characters,
// private use, unassigned, surrogates, line/paragraph separators) plus the blanks that are letters or marks
// (combining grapheme joiner, Hangul fillers, variation selectors): `invoice\u202Egnp.exe` must not pose as
// `invoiceexe.png`
const HIDDEN = /(?![\t\n])[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}\p{Zl}\p{Zp}\u034f\u115f\u1160\u3164\uffa0\u180b-\u180f\ufe00-\ufe0f\u{e0100}-\u{e01ef}]/gu;

function visible(value) {
  const unit = (code) => `\\u${code.toString(16).toUpperCase().padStart(4, "0")}`;
  return String(value ?? "").replace(HIDDEN, (c) => Array.from({ length: c.length }, (_, i) => unit(c.charCodeAt(i))).join(""));
}

// every value put into the page's HTML goes through esc: markup-escaped, hidden characters shown
function esc(value) {
  return visible(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const rendered = new WeakMap(); // element -> the HTML last put in it

// `el.html = …` replaces an element's content only when it changed: a poll that finds nothing new leaves the
// page (and the button under the pointer) alone
Object.defineProperty(HTMLElement.prototype, "html", {
  set(html) {
    if (rendered.get(this) === html) return;
    rendered.set(this, html);
    this.innerHTML = html;
  },
});

// an epoch's date, time and UTC offset ("UTC+8", "UTC") in this browser's timezone or the given one (an unknown
// zone falls back to this browser's)
function timeParts(epoch, timeZone) {
  const options = {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hourCycle: "h23", timeZoneName: "shortOffset",
  };
  let parts;
  try {
    parts = new Intl.DateTimeFormat("en-US", { ...options, ...(timeZone ? { timeZone } : {}) }).formatToParts(new Date(epoch * 1000));
  } catch {
    parts = new Intl.DateTimeFormat("en-US", options).formatToParts(new Date(epoch * 1000));
  }
  const p = Object.fromEntries(parts.map((part) => [part.type, part.value]));
  return { ...p, offset: p.timeZoneName.replace(/^GMT/, "UTC") }; // "GMT+8" → "UTC+8", "GMT" → "UTC"
}

function fmtTime(epoch, timeZone) {
  // "2026-12-05 16:03:26 UTC+8": always with its UTC offset, so an operator knows which time it is (a schedule
  // fires in its own timezone)
  if (!epoch) return "";
  const p = timeParts(epoch, timeZone);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.offset}`;
}

function fmtDuration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}` : `${m}:${String(r).padStart(2, "0")}`;
}

function badge(status, prefix = "st_") {
  const label = prefix === "acc_" && status === "active" ? t("acc_active") : t("st_" + status);
  return `<span class="badge ${esc(status)}">${esc(label)}</span>`;
}

// --- session and API --------------------------------------------------------------------------------------

const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code;
    this.field = error?.field;
  }
}

// A page's reads answered after the operator left it: its refresh stops there (its elements are gone).
class LeftPage extends Error {}

async function api(method, path, body, { forPage = true } = {}) {
  const seq = routeSeq;
  const headers = { Authorization: `Bearer ${token()}` };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (response.status === 401) {
    showLogin(t("bad_token"));
    throw new ApiError(401, data.error);
  }
  if (forPage && method === "GET" && seq !== routeSeq) throw new LeftPage(); // a read for a page no longer shown
  if (!response.ok) throw new ApiError(response.status, data.error || { message: String(data) });
  return data;
}

function notify(message, kind = "ok") {
  const box = $("#notice");
  box.className = kind;
  box.textContent = visible(message);
  box.hidden = false;
  clearTimeout(notify.timer);
  if (kind === "ok") notify.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

// the API's words are English (and name the field); a headline in the reader's language comes first
function errorHeadline(error) {
  const byCode = `err_${error.code}`;
  if (error.code && t(byCode) !== byCode) return t(byCode);
  const byStatus = error.status >= 500 ? "err_5xx" : `err_${error.status}`;
  return t(byStatus) !== byStatus ? t(byStatus) : "";
}

function showError(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return;
    const detail = error.field ? `${error.message} (${t("field")}: ${error.field})` : error.message;
    const headline = errorHeadline(error);
    notify(headline ? `${headline}${lang === "zh" ? "：" : ": "}${detail}` : detail, "error");
  } else notify(String(error.message || error), "error");
}

async function run(action) {
  try {
    await action();
  } catch (error) {
    if (error instanceof LeftPage) return; // nothing to show: the page it was for is gone
    showError(error);
  }
}

// --- shell: login, language, routing, polling ---------------------------------------------------------------

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = `wechat-broadcast ${t("console")}`;
  $$("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = lang === "zh" ? "English" : "中文";
}

function showLogin(message) {
  clearInterval(pollTimer); // no polling without a token: it would only collect 401s
  sessionStorage.removeItem(TOKEN_KEY);
  $("#login").hidden = false;
  $("#view").hidden = true;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  if (message) notify(message, "error");
  $("#token").value = "";
  $("#token").focus();
}

async function login(event) {
  event.preventDefault();
  const value = $("#token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api("GET", "/v1/accounts", undefined, { forPage: false });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) showError(error);
    return;
  }
  $("#token").value = "";
  $("#notice").hidden = true;
  enter();
}

// --- roles: what this key may do (GET /v1/keys/me); buttons it cannot use are disabled with the reason ------------

const ROLES = ["viewer", "operator", "admin"];
let me = { name: "", role: "admin" }; // until /v1/keys/me answers (an API without keys: every token is admin)
const allows = (needed) => ROLES.indexOf(me.role) >= ROLES.indexOf(needed);
const roleNeeded = (needed) => t("needs_role").replace("{role}", t("role_" + needed)).replace("{mine}", t("role_" + me.role));

// the least role each button (data-action) and each form's submit needs: the API's table (scheduler/api/roles.py)
const ACTION_NEEDS = {
  steer: "operator", start: "operator", recall: "operator", replay: "operator", "delete-dead": "operator",
  schedule: "operator", "delete-schedule": "operator", "edit-account": "admin", lift: "operator",
  "sync-contacts": "operator",
  account: (el) => (el.dataset.op === "pause" ? "operator" : "admin"),
};
const FORM_NEEDS = {
  "test-form": "operator", "campaign-form": "operator", "schedule-form": "operator", "account-form": "admin",
  "supp-add": "operator", "held-apply": "operator",
};

function gate(root = document) {
  const mark = (el, needed) => {
    if (!needed || allows(needed)) return;
    el.disabled = true;
    el.classList.add("no-role");
    el.title = roleNeeded(needed);
  };
  $$("[data-action]", root).forEach((el) => {
    const rule = ACTION_NEEDS[el.dataset.action];
    mark(el, typeof rule === "function" ? rule(el) : rule);
  });
  Object.entries(FORM_NEEDS).forEach(([id, needed]) => {
    const form = document.getElementById(id);
    if (form) $$("button[type=submit]", form).forEach((el) => mark(el, needed));
  });
}

async function whoAmI() {
  try {
    me = await api("GET", "/v1/keys/me", undefined, { forPage: false }); // the shell's, whatever the page
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) me = { name: "", role: "admin" };
    else throw error;
  }
  $("#me").textContent = me.name ? `${t("signed_in_as")}: ${me.name} · ${t("role_" + me.role)}` : "";
  $("#me").hidden = !me.name;
}

function enter() {
  $("#login").hidden = true;
  $("#view").hidden = false;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  run(async () => {
    await whoAmI();
    route();
  });
}

new MutationObserver(() => gate()).observe(document.documentElement, { childList: true, subtree: true });

let current = null; // { name, refresh() }
let pollTimer = null;
let routeSeq = 0; // one more each time a page is drawn: reads started before belong to a page that is gone

function route() {
  if (!token()) return showLogin();
  const [page, arg] = (location.hash.slice(1) || "campaigns").split("/");
  const pages = {
    campaigns: campaignsPage, campaign: campaignPage, new: newCampaignPage, accounts: accountsPage, dead: deadPage, schedules: schedulesPage, suppressions: suppressionsPage,
    overview: overviewPage, audit: auditPage,
  };
  const render = pages[page] || campaignsPage;
  $$("#nav a").forEach((a) => a.classList.toggle("on", a.dataset.page === (page === "campaign" ? "campaigns" : page)));
  clearInterval(pollTimer);
  routeSeq += 1;
  if ($("#notice").className !== "ok") $("#notice").hidden = true; // an error belongs to the page it came from
  current = render(decodeURIComponent(arg || ""));
  current.name = page;
  run(() => current.refresh());
  pollTimer = setInterval(() => {
    if (!document.hidden && current.poll !== false) run(() => current.refresh());
  }, POLL_MS);
}

const actions = {}; // data-action name -> handler(element)

document.addEventListener("click", (event) => {
  const el = event.target.closest("[data-action]");
  if (!el || el.disabled) return;
  const handler = actions[el.dataset.action];
  if (handler) {
    event.preventDefault();
    run(() => handler(el));
  }
});

actions.lang = () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem(LANG_KEY, lang);
  applyLang();
  if (token()) {
    $("#me").textContent = me.name ? `${t("signed_in_as")}: ${me.name} · ${t("role_" + me.role)}` : "";
    route();
  }
};
actions.logout = () => showLogin();

window.addEventListener("hashchange", () => { if (token()) route(); });
window.addEventListener("DOMContentLoaded", async () => {
  await auditActionsLoaded;
  applyLang();
  $("#login-form").addEventListener("submit", login);
  if (token()) enter();
  else showLogin();
});

const view = () => $("#view");

// --- campaigns ------------------------------------------------------------------------------------------------

const samples = new Map(); // campaign id -> [[time, done], ...] for the rate

function progressOf(c) {
  const n = c.counts || {};
  const done = (n.sent || 0) + (n.dead || 0) + (n.cancelled || 0) + (n.skipped || 0);
  const remaining = Math.max(0, c.total - done);
  const now = Date.now() / 1000;
  const list = samples.get(c.id) || [];
  list.push([now, done]);
  while (list.length > 2 && now - list[0][0] > 30) list.shift();
  samples.set(c.id, list);
  const [t0, d0] = list[0];
  const rate = now - t0 > 0.5 ? (done - d0) / (now - t0) : 0;
  const eta = remaining === 0 ? 0 : rate > 0 ? remaining / rate : Infinity;
  return { sent: n.sent || 0, dead: n.dead || 0, cancelled: n.cancelled || 0, skipped: n.skipped || 0, remaining, done, rate, eta };
}

// a rate is news only once something was sent and while something is left to send: a draft, a campaign not
// started yet and a finished one show "–", not "0.0 条/秒"
function rateOf(p, unit = true) {
  if (p.remaining === 0 || p.sent === 0) return "–";
  return unit ? `${p.rate.toFixed(1)} ${t("per_s")}` : p.rate.toFixed(1);
}

function steerButtons(c) {
  const b = [];
  if (c.status === "draft") b.push(`<button class="primary" data-action="start" data-id="${esc(c.id)}">${t("start")}</button>`);
  if (["active", "scheduled"].includes(c.status)) b.push(`<button data-action="steer" data-op="pause" data-id="${esc(c.id)}">${t("pause")}</button>`);
  if (c.status === "paused") b.push(`<button data-action="steer" data-op="resume" data-id="${esc(c.id)}">${t("resume")}</button>`);
  if (!c.finished && c.status !== "cancelled") b.push(`<button class="danger" data-action="steer" data-op="cancel" data-id="${esc(c.id)}">${t("cancel")}</button>`);
  return b.join(" ");
}

const RECALL_OUTCOMES = ["requested", "recalled", "too_late", "unsupported", "failed", "pending"];

function recallCard(c) {
  // a campaign's recall so far: how many revokes were asked for and what became of them
  if (!c.recall) return "";
  const stats = RECALL_OUTCOMES.map((k) => `<div class="stat"><b id="recall-${k}">${c.recall[k] ?? 0}</b><span>${t("rc_" + k)}</span></div>`).join("");
  return `<h2>${t("recall_title")}</h2><div class="card stats" id="recall">${stats}</div>`;
}

actions.recall = async (el) => {
  if (!confirm(t("confirm_recall"))) return;
  await api("POST", `/v1/campaigns/${encodeURIComponent(el.dataset.id)}/recall`, {});
  await current.refresh();
};

actions.steer = async (el) => {
  if (el.dataset.op === "cancel" && !confirm(t("confirm_cancel"))) return;
  await api("POST", `/v1/campaigns/${encodeURIComponent(el.dataset.id)}/${el.dataset.op}`);
  await current.refresh();
};

actions.start = async (el) => {
  if (!confirm(t("confirm_start"))) return;
  await api("POST", `/v1/campaigns/${encodeURIComponent(el.dataset.id)}/start`);
  notify(`${el.dataset.id}: ${t("started")}`);
  await current.refresh();
};

// why a campaign paused itself (error threshold, with the vendor's texts), shown under its status
// Reasons the product writes (auto-pause, resume checks, operator actions) are English in the store; the
// Chinese view translates their fixed words and keeps the vendor's own text (often Chinese already) as is.
const REASONS_ZH = [
  [/^error threshold — (\d+) of the last (\d+) failed: /, "出错过多，已自动暂停：最近 $2 次中 $1 次失败："],
  [/^error threshold — (\d+) in a row failed: /, "出错过多，已自动暂停：连续 $1 次失败："],
  [/^auto-paused: (\d+) throttling answers in a row despite the slow-down \(last: (.*)\)$/, "已自动暂停：降速后仍连续 $1 次被服务商限流（最后一次：$2）"],
  [/^paused by operator$/, "由操作员暂停"],
  [/^the key that created it was revoked: an admin may resume it$/, "创建它的密钥已被吊销，需管理员恢复"],
  [/^the vendor reports the account offline$/, "服务商报告该账号离线"],
  [/^online check failed: /, "在线检查失败："],
  [/^resumed after a probe send to (\S+)/, "向 $1 试发成功后恢复"],
  [/^still down/, "仍不可用"],
  [/ \(was down: (.*)\)$/, "（此前不可用：$1）"],
];
const reasonText = (text) => {
  if (lang !== "zh" || !text) return text || "";
  return REASONS_ZH.reduce((out, [pattern, zh]) => out.replace(pattern, zh), text);
};
const pauseReason = (c) => (c.pause_reason ? `<div class="wrap reason pause-reason" title="${esc(c.pause_reason)}">${esc(reasonText(c.pause_reason))}</div>` : "");

function campaignsPage() {
  view().innerHTML = `<div class="row"><h1>${t("campaigns")}</h1><span class="spacer"></span>
    <span class="muted">${t("refresh_note")}</span> <a href="#new"><button class="primary">${t("new_campaign")}</button></a></div>
    <div id="list"><p class="muted">${t("loading")}</p></div>`;
  return {
    async refresh() {
      const { campaigns } = await api("GET", "/v1/campaigns?limit=100");
      if (!campaigns.length) {
        $("#list").html = `<p class="muted">${t("no_campaigns")}</p>`;
        return;
      }
      const rows = campaigns.map((c) => {
        const p = progressOf(c);
        return `<tr data-campaign="${esc(c.id)}">
          <td data-label="${t("name")}"><a href="#campaign/${encodeURIComponent(c.id)}">${esc(c.name)}</a><div class="mono muted">${esc(c.id)}</div></td>
          <td data-label="${t("status")}" class="status">${badge(c.status)}${pauseReason(c)}</td>
          <td data-label="${t("progress")}"><progress max="${c.total}" value="${p.done}"></progress> ${p.done}/${c.total}</td>
          <td data-label="${t("sent")}" class="num sent">${p.sent}</td>
          <td data-label="${t("dead")}" class="num dead">${p.dead}</td>
          <td data-label="${t("skipped")}" class="num skipped">${p.skipped}</td>
          <td data-label="${t("remaining")}" class="num remaining">${p.remaining}</td>
          <td data-label="${t("rate")}" class="num rate">${rateOf(p)}</td>
          <td data-label="${t("eta")}" class="num">${fmtDuration(p.eta)}</td>
          <td data-label="${t("created")}">${esc(fmtTime(c.created))}</td>
          <td data-label="${t("actions")}" class="actions">${steerButtons(c)}</td></tr>`;
      }).join("");
      $("#list").html = `<div class="tablewrap"><table class="cards"><thead><tr>
        <th>${t("name")}</th><th>${t("status")}</th><th>${t("progress")}</th><th class="num">${t("sent")}</th>
        <th class="num">${t("dead")}</th><th class="num">${t("skipped")}</th><th class="num">${t("remaining")}</th><th class="num">${t("rate")}</th>
        <th class="num">${t("eta")}</th><th>${t("created")}</th><th>${t("actions")}</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    },
  };
}

function campaignPage(id) {
  const state = { status: "", cursors: [0], page: 0 };
  const path = `/v1/campaigns/${encodeURIComponent(id)}`;
  view().innerHTML = `<p><a href="#campaigns">← ${t("back")}</a></p><div id="head"><p class="muted">${t("loading")}</p></div>
    <form id="test-form" class="card row" autocomplete="off" hidden>
      <label class="grow">${t("test_to")}<input id="test-to" spellcheck="false"></label>
      <button type="submit" id="test-submit">${t("test_send")}</button></form>
    <div id="tests"></div>
    <h2>${t("per_min_chart")}</h2><div id="chart" class="card chartbox"></div>
    <h2>${t("deliveries")}</h2>
    <div class="row"><select id="status-filter"><option value="">${t("all_statuses")}</option>
      ${["queued", "scheduled", "sending", "retrying", "sent", "dead", "cancelled", "skipped"].map((s) => `<option value="${s}">${t("st_" + s)}</option>`).join("")}
    </select><span class="spacer"></span>
    <button data-action="export" data-format="csv" data-id="${esc(id)}">${t("export_csv")}</button>
    <button data-action="export" data-format="jsonl" data-id="${esc(id)}">${t("export_jsonl")}</button></div>
    <div id="deliveries" class="card muted">${t("loading")}</div>
    <div class="row pager"><button data-action="page" data-dir="-1">${t("prev")}</button>
    <button data-action="page" data-dir="1">${t("next")}</button><span id="page-no" class="muted"></span></div>
    <h2>${t("history_title")}</h2><div id="history" class="muted">${t("loading")}</div>`;
  $("#status-filter").addEventListener("change", (e) => {
    state.status = e.target.value;
    state.cursors = [0];
    state.page = 0;
    run(() => current.refresh());
  });
  $("#test-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
      const to = $("#test-to").value.split(/[\s,，]+/).map((s) => s.trim()).filter(Boolean);
      $("#test-submit").disabled = true;
      try {
        await api("POST", `${path}/test`, { to });
        notify(t("test_queued"));
        await current.refresh();
      } finally {
        $("#test-submit").disabled = false;
      }
    });
  });
  actions.page = async (el) => {
    const next = state.page + Number(el.dataset.dir);
    if (next < 0 || state.cursors[next] === undefined || state.cursors[next] === null) return;
    state.page = next;
    await current.refresh();
  };
  return {
    async refresh() {
      const c = await api("GET", path);
      const p = progressOf(c);
      $("#test-form").hidden = c.status === "finished" || c.status === "cancelled"; // a test before the start, or while it runs
      const tests = c.tests || { count: 0, jobs: [] };
      $("#tests").html = tests.count ? `<h2>${t("tests")}</h2><p class="muted" id="tests-summary">${esc(t("tests_summary").replace("{n}", tests.count).replace("{sent}", tests.sent))} · ${esc(fmtTime(tests.last_at))}</p>
        <div class="tablewrap"><table class="cards"><thead><tr><th>${t("id")}</th><th>${t("to")}</th><th>${t("account")}</th><th>${t("status")}</th></tr></thead>
        <tbody>${tests.jobs.map((j) => `<tr class="test-job"><td data-label="${t("id")}" class="id">${esc(j.id)}</td><td data-label="${t("to")}">${esc(j.to)}</td>
        <td data-label="${t("account")}">${esc(j.account)}</td><td data-label="${t("status")}">${badge(j.status)}</td></tr>`).join("")}</tbody></table></div>` : "";
      const recallButton = c.recall || !c.counts.sent ? "" : ` <button class="danger" data-action="recall" data-id="${esc(c.id)}">${t("recall")}</button>`;
      $("#head").html = `<div class="row"><h1>${esc(c.name)}</h1>${badge(c.status)}<span class="spacer"></span>${steerButtons(c)}${recallButton}</div>
        ${c.pause_reason ? `<div class="card notice-bad"><b>${t(c.owner_revoked ? "paused_because" : "pause_reason")}:</b> <span id="pause-reason" title="${esc(c.pause_reason)}">${esc(reasonText(c.pause_reason))}</span></div>` : ""}
        <div class="mono muted">${esc(c.id)} · ${esc(c.accounts.join(", "))} · ${t("priority")}: ${t(c.priority)}${c.send_at ? " · " + t("send_at") + ": " + esc(fmtTime(c.send_at)) : ""}</div>
        <div class="card stats">
          <div class="stat"><b id="stat-total">${c.total}</b><span>${t("total")}</span></div>
          <div class="stat"><b id="stat-sent">${p.sent}</b><span>${t("sent")}</span></div>
          <div class="stat"><b id="stat-dead">${p.dead}</b><span>${t("dead")}</span></div>
          <div class="stat"><b id="stat-cancelled">${p.cancelled}</b><span>${t("cancelled")}</span></div>
          <div class="stat"><b id="stat-skipped">${p.skipped}</b><span>${t("skipped")}</span></div>
          <div class="stat"><b id="stat-remaining">${p.remaining}</b><span>${t("remaining")}</span></div>
          <div class="stat"><b id="stat-rate">${rateOf(p, false)}</b><span>${t("rate")} (${t("per_s")})</span></div>
          <div class="stat"><b>${fmtDuration(p.eta)}</b><span>${t("eta")}</span></div>
          <div class="stat"><progress max="${c.total}" value="${p.done}"></progress></div>
        </div>${recallCard(c)}`;
      const query = new URLSearchParams({ cursor: state.cursors[state.page], limit: 50 });
      if (state.status) query.set("status", state.status);
      const page = await api("GET", `${path}/deliveries?${query}`);
      state.cursors[state.page + 1] = page.next_cursor;
      $("#page-no").textContent = `#${state.page + 1}`;
      const rows = page.deliveries.map((d) => `<tr>
        <td data-label="${t("id")}" class="id">${esc(d.id)}</td><td data-label="${t("to")}">${esc(d.to)}</td>
        <td data-label="${t("account")}">${esc(d.account)}</td><td data-label="${t("status")}">${badge(d.status)}</td>
        <td data-label="${t("attempts")}" class="num">${d.attempts}</td>
        <td data-label="${t("new_msg_id")}" class="id new-msg-id">${esc(d.result?.new_msg_id ?? "")}</td>
        <td data-label="${t("msg_id")}" class="id">${esc(d.result?.msg_id ?? "")}</td>
        <td data-label="${t("sent_at")}">${esc(fmtTime(d.sent_at))}</td>
        <td data-label="${t("error")}" class="wrap"${d.skip_reason ? ` title="${esc(d.skip_reason)}"` : ""}>${esc(d.skip_reason ? skipText(d.skip_reason) : d.reason ? `${deadReasonText(d.reason)}: ${d.error || ""}` : d.error || "")}</td>
        <td data-label="${t("recall_col")}" class="recall" title="${esc(d.recall_error || "")}">${d.recall ? esc(t("rc_" + d.recall)) : ""}</td></tr>`).join("");
      $("#deliveries").className = "tablewrap";
      $("#deliveries").html = `<table class="cards"><thead><tr><th>${t("id")}</th><th>${t("to")}</th><th>${t("account")}</th>
        <th>${t("status")}</th><th class="num">${t("attempts")}</th><th>${t("new_msg_id")}</th><th>${t("msg_id")}</th>
        <th>${t("sent_at")}</th><th>${t("error")}</th><th>${t("recall_col")}</th></tr></thead><tbody>${rows}</tbody></table>`;
      const timeline = await api("GET", `${path}/timeline`);
      $("#chart").html = chartSvg(timeline.minutes, [["sent", "c-sent"], ["retried", "c-retried"], ["dead", "c-dead"]], "campaign-chart");
      const audit = await api("GET", `/v1/audit?limit=50&target=${encodeURIComponent("campaign:" + id)}`);
      $("#history").html = auditTable(audit.items);
    },
  };
}

actions.export = async (el) => {
  const response = await fetch(`/v1/campaigns/${encodeURIComponent(el.dataset.id)}/deliveries?format=${el.dataset.format}`, {
    headers: { Authorization: `Bearer ${token()}` },
  });
  if (!response.ok) throw new ApiError(response.status, (await response.json()).error);
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `${el.dataset.id}-deliveries.${el.dataset.format}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
};

// --- new campaign -----------------------------------------------------------------------------------------------

function parseCsv(text, maxRows) {
  // RFC 4180: quoted fields, doubled quotes, CR/LF; stops after maxRows data rows (preview only)
  const rows = [];
  let row = [], field = "", quoted = false;
  text = text.replace(/^\uFEFF/, "");
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") { row.push(field); field = ""; }
    else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(field); field = "";
      if (row.some((v) => v !== "")) rows.push(row);
      row = [];
      if (rows.length > maxRows) return rows;
    } else field += ch;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

function recipientRows(text, isJsonl) {
  if (isJsonl) {
    return text.split(/\r?\n/).filter((l) => l.trim()).slice(0, 5).map((l) => {
      try { return JSON.parse(l); } catch { return { to: l }; }
    });
  }
  const [header, ...rows] = parseCsv(text, 5);
  if (!header) return [];
  return rows.slice(0, 5).map((r) => {
    const item = { vars: {} };
    header.forEach((h, i) => {
      const key = h.trim();
      if (key === "to" || key === "account") item[key] = r[i] ?? "";
      else if (key) item.vars[key] = r[i] ?? "";
    });
    return item;
  });
}

function countLines(text) {
  return text.split(/\r?\n/).filter((l) => l.trim()).length;
}

//: A sequence to start from: a line of text, then the poster, then the mini-program card (what operators post most).
const SEQUENCE_EXAMPLE = JSON.stringify({ kind: "sequence", parts: [
  { kind: "text", text: "{name}，双十一快乐" },
  { kind: "image", url: "https://example.com/poster.jpg" },
  { kind: "link", title: "双十一会场", description: "点开看看", url: "https://example.com/1111", thumb_url: "https://example.com/t.jpg" },
] }, null, 2);

function messageForm(prefix) {
  const kinds = ["text", "mini", "mini_xml", "appmsg", "image", "file", "link", "sequence"];
  return `<label>${t("message_kind")}<select id="${prefix}kind">
      ${kinds.map((k) => `<option value="${k}">${t("kind_" + k)}</option>`).join("")}</select></label>
    <div data-kind="text"><label>${t("text")} <span class="hint">${t("text_hint")}</span><textarea class="text" id="${prefix}text"></textarea></label>
      <div class="grid"><label>${t("mentions")}<input id="${prefix}mentions"></label>
      <label class="check"><input type="checkbox" id="${prefix}mention_all"> ${t("mention_all")}</label></div></div>
    <div data-kind="mini" class="grid hidden">${["app_id", "username", "title", "page_path", "cover_url", "display_name", "icon_url"]
      .map((f) => `<label>${f}<input id="${prefix}mp_${f}"></label>`).join("")}</div>
    <div data-kind="mini_xml appmsg" class="hidden"><label>${t("xml")}<textarea id="${prefix}xml" spellcheck="false"></textarea></label>
      <label data-kind="mini_xml">${t("cover_url")}<input id="${prefix}xml_cover"></label></div>
    <div data-kind="image file" class="grid hidden"><label>${t("media_url")}<input id="${prefix}media_url" type="url"></label>
      <label data-kind="file">${t("file_name")}<input id="${prefix}file_name"></label></div>
    <div data-kind="link" class="grid hidden"><label>${t("link_title")}<input id="${prefix}link_title"></label>
      <label>${t("link_description")}<input id="${prefix}link_description"></label>
      <label>${t("link_url")}<input id="${prefix}link_url" type="url"></label>
      <label>${t("thumb_url")}<input id="${prefix}thumb_url" type="url"></label></div>
    <div data-kind="sequence" class="hidden"><label>${t("sequence_json")} <span class="hint">${t("sequence_hint")}</span>
      <textarea id="${prefix}sequence" spellcheck="false" rows="12">${esc(SEQUENCE_EXAMPLE)}</textarea></label></div>`;
}

function bindKind(prefix, onChange) {
  const select = $(`#${prefix}kind`);
  const show = () => {
    $$("[data-kind]", view()).forEach((el) => el.classList.toggle("hidden", !el.dataset.kind.split(" ").includes(select.value)));
    onChange();
  };
  select.addEventListener("change", show);
  show();
}

function readMessage(prefix) {
  const v = (id) => $(`#${prefix}${id}`).value;
  const kind = v("kind");
  if (kind === "text") {
    const mentions = v("mentions").split(",").map((s) => s.trim()).filter(Boolean);
    return { kind: "text", text: v("text"), mentions, mention_all: $(`#${prefix}mention_all`).checked };
  }
  if (kind === "mini") {
    const message = { kind: "miniprogram" };
    ["app_id", "username", "title", "page_path", "cover_url", "display_name", "icon_url"].forEach((f) => {
      if (v("mp_" + f)) message[f] = v("mp_" + f);
    });
    return message;
  }
  if (kind === "mini_xml") {
    const message = { kind: "miniprogram", xml: v("xml") };
    if (v("xml_cover")) message.cover_url = v("xml_cover");
    return message;
  }
  if (kind === "image") return { kind: "image", url: v("media_url") };
  if (kind === "file") return { kind: "file", url: v("media_url"), name: v("file_name") };
  if (kind === "link") {
    return { kind: "link", title: v("link_title"), description: v("link_description"), url: v("link_url"), thumb_url: v("thumb_url") };
  }
  if (kind === "sequence") {
    try { return JSON.parse(v("sequence")); } catch (error) { return { kind: "sequence", parts: "not JSON: " + error.message }; }
  }
  return { kind: "appmsg", xml: v("xml") };
}

//: What one message (or one part) will look like, for the check box: text as the recipient reads it, a
//: link as its card, media by URL (the console never loads a third-party image), app XML as sent.
function messagePreview(shown, xml) {
  if (shown.kind === "text") return `<div class="card"><div class="muted">${t("rendered")}</div><div class="rendered">${esc(shown.text)}</div></div>`;
  if (shown.kind === "image") return `<div class="card">🖼 <span class="mono">${esc(shown.url)}</span></div>`;
  if (shown.kind === "file") return `<div class="card">📄 <b>${esc(shown.name)}</b> <span class="mono muted">${esc(shown.url)}</span></div>`;
  if (shown.kind === "link") {
    return `<div class="card link-card"><b>${esc(shown.title)}</b><div class="muted">${esc(shown.description || "")}</div>
      <div class="mono muted">${esc(shown.url)}</div></div>` + (xml ? `<div class="muted">${t("extracted")}</div><pre>${esc(xml)}</pre>` : "");
  }
  let html = xml ? `<div class="muted">${t("extracted")}</div><pre class="extracted">${esc(xml)}</pre>` : "";
  if (shown.kind === "miniprogram" && !shown.xml) html += `<pre>${esc(JSON.stringify(shown, null, 2))}</pre>`;
  return html;
}

function newCampaignPage() {
  const state = { preview: [], checkTimer: null, checkSeq: 0 };
  view().innerHTML = `<h1>${t("new_campaign")}</h1>
    <form id="campaign-form" class="card" autocomplete="off">
      <div class="grid"><label>${t("name")}<input id="c-name" required maxlength="200"></label>
      <label>${t("priority")}<select id="c-priority"><option value="normal">${t("normal")}</option><option value="high">${t("high")}</option></select></label>
      <label>${t("send_at")} <span class="hint">${t("send_at_hint")}</span><input type="datetime-local" id="c-send-at"></label>
      <label class="check"><input type="checkbox" id="c-draft"> ${t("draft")}</label></div>
      <h2>${t("accounts")}</h2><div id="c-accounts" class="row muted">${t("loading")}</div>
      <h2>${t("message_kind")}</h2>${messageForm("c-")}
      <div id="c-check" class="muted"></div>
      <div class="row"><label class="check"><input type="radio" name="c-source" value="file" checked> ${t("src_file")}</label>
      <label class="check"><input type="radio" name="c-source" value="audience" id="c-src-audience"> ${t("src_audience")}</label></div>
      <div id="c-file-box"><h2>${t("recipients_csv")}</h2><p class="hint">${t("csv_hint")}</p>
      <input type="file" id="c-file" accept=".csv,.jsonl,.ndjson,text/csv">
      <div id="c-preview"></div></div>
      <div id="c-audience-box" hidden><h2>${t("audience")}</h2>
      <div class="row"><label class="check"><input type="checkbox" id="c-aud-friends" checked> ${t("aud_friends")}</label>
      <label class="check"><input type="checkbox" id="c-aud-groups"> ${t("aud_groups")}</label></div>
      <div class="muted">${t("labels_any")}</div><div id="c-labels-any" class="row"></div>
      <div class="muted">${t("exclude_labels")}</div><div id="c-labels-excl" class="row"></div>
      <div id="c-audience" class="card muted"></div></div>
      <p><button type="submit" class="primary" id="c-submit">${t("submit")}</button></p>
    </form>`;
  const check = () => {
    clearTimeout(state.checkTimer);
    state.checkTimer = setTimeout(() => run(liveCheck), 300);
  };
  const liveCheck = async () => {
    const seq = ++state.checkSeq;
    const box = $("#c-check");
    if (!state.formTouched) { box.textContent = ""; return; } // nothing to judge before anything was typed
    const body = { message: readMessage("c-") };
    if (state.preview[0]) body.vars = state.preview[0].vars || {};
    box.textContent = t("checking");
    try {
      const answer = await api("POST", "/v1/messages/check", body);
      if (seq !== state.checkSeq) return;
      const shown = answer.rendered || answer.message;
      let html = `<h2>${t("check")}: <span class="check-ok">${t("check_ok")}</span></h2>`;
      html += answer.vendors.length
        ? `<p class="muted" id="c-vendors">${t("carried_by")}: ${answer.vendors.map(esc).join(", ")}</p>`
        : `<p class="check-bad" id="c-vendors">${t("carried_none")}</p>`;
      if (shown.kind === "sequence") {
        html += `<ol id="c-parts">${shown.parts.map((part, i) => `<li><span class="muted">${t("part").replace("{n}", i + 1)} · ${esc(part.kind)}</span>${messagePreview(part, answer.parts[i].xml)}</li>`).join("")}</ol>`;
      } else {
        html += messagePreview(shown, answer.xml);
      }
      box.innerHTML = html;
      const rendered = $(".rendered", box);
      if (rendered && answer.rendered && shown.kind === "text") rendered.id = "c-rendered";
      const extracted = $(".extracted", box);
      if (extracted) extracted.id = "c-extracted";
    } catch (error) {
      if (seq !== state.checkSeq || !(error instanceof ApiError)) throw error;
      box.innerHTML = `<h2>${t("check")}: <span class="check-bad">${esc(error.message)}${error.field ? ` (${t("field")}: ${esc(error.field)})` : ""}</span></h2>`;
    }
  };
  const audienceMode = () => $("#c-src-audience").checked;
  const readAudience = () => {
    const accounts = $$("#c-accounts input:checked").map((i) => i.value);
    const ticked = (box) => [...new Set($$(`${box} input:checked`).map((i) => i.value))];
    const audience = { accounts, friends: $("#c-aud-friends").checked, chatrooms: $("#c-aud-groups").checked };
    const any = ticked("#c-labels-any"), excl = ticked("#c-labels-excl");
    if (any.length) audience.labels_any = any;
    if (excl.length) audience.exclude_labels = excl;
    return audience;
  };
  const ago = (seconds) => seconds < 120 ? `${Math.round(seconds)} ${t("seconds")}` : seconds < 7200 ? `${Math.round(seconds / 60)} ${t("minutes")}` : `${(seconds / 3600).toFixed(1)} ${t("hours")}`;
  const loadLabels = async () => {
    const accounts = $$("#c-accounts input:checked").map((i) => i.value);
    const names = new Map();
    for (const id of accounts) {
      try {
        const { items } = await api("GET", `/v1/accounts/${encodeURIComponent(id)}/labels`);
        items.forEach((l) => names.set(l.name, (names.get(l.name) || 0) + l.count));
      } catch (error) { if (!(error instanceof ApiError)) throw error; }
    }
    const boxes = (cls) => [...names].map(([name, count]) => `<label class="check"><input type="checkbox" class="${cls}" value="${esc(name)}"> ${esc(name)} <span class="muted">(${count})</span></label>`).join("");
    $("#c-labels-any").innerHTML = boxes("lab-any");
    $("#c-labels-excl").innerHTML = boxes("lab-excl");
  };
  const previewAudience = async () => {
    const seq = ++state.audSeq;
    const box = $("#c-audience");
    const audience = readAudience();
    if (!audience.accounts.length) { box.textContent = t("pick_account"); return; }
    box.textContent = t("checking");
    try {
      const got = await api("POST", "/v1/audiences/preview", { audience, message: readMessage("c-") });
      if (seq !== state.audSeq) return;
      const lines = Object.entries(got.accounts).map(([acct, a]) => `<li>${esc(t("aud_age").replace("{acct}", acct).replace("{n}", a.recipients).replace("{age}", ago(a.sync_age_s)))}</li>`).join("");
      const rows = got.sample.slice(0, 5).map((r) => `<tr><td>${esc(r.to)}</td><td>${esc(r.account)}</td><td>${esc(Object.values(r.vars || {}).join(" "))}</td></tr>`).join("");
      box.innerHTML = `<h2 id="c-aud-total">${esc(t("aud_total").replace("{n}", got.total))}</h2>
        <p>${esc(t("aud_dup").replace("{n}", got.duplicates))} · ${esc(t("aud_excl").replace("{n}", got.excluded))}</p><ul>${lines}</ul>
        <div class="muted">${t("aud_first")}</div><div class="tablewrap"><table><tbody>${rows}</tbody></table></div>`;
    } catch (error) {
      if (seq !== state.audSeq || !(error instanceof ApiError)) throw error;
      box.innerHTML = `<span class="check-bad" id="c-aud-error">${esc(audienceErrorText(error))}</span>
        <div class="muted wrap">${esc(error.message)}${error.field ? ` (${t("field")}: ${esc(error.field)})` : ""}</div>`;
    }
  };
  const audienceChanged = () => { if (audienceMode()) { clearTimeout(state.audTimer); state.audTimer = setTimeout(() => run(previewAudience), 300); } };
  state.audSeq = 0;
  $$("input[name='c-source']").forEach((r) => r.addEventListener("change", () => run(async () => {
    $("#c-file-box").hidden = audienceMode();
    $("#c-audience-box").hidden = !audienceMode();
    if (audienceMode()) { await loadLabels(); audienceChanged(); }
  })));
  $("#c-accounts").addEventListener("change", () => run(async () => { if (audienceMode()) { await loadLabels(); audienceChanged(); } }));
  $("#c-audience-box").addEventListener("change", audienceChanged);
  bindKind("c-", check);
  state.formTouched = false;
  $("#campaign-form").addEventListener("input", (e) => { if (e.target.id !== "c-file") { state.formTouched = true; check(); audienceChanged(); } });
  $("#c-file").addEventListener("change", () => run(async () => {
    const file = $("#c-file").files[0];
    if (!file) return;
    const text = await file.text();
    const jsonl = /\.(jsonl|ndjson)$/i.test(file.name);
    state.preview = recipientRows(text, jsonl);
    const total = jsonl ? countLines(text) : Math.max(0, countLines(text) - 1);
    const keys = [...new Set(state.preview.flatMap((r) => Object.keys(r.vars || {})))];
    $("#c-preview").innerHTML = `<p class="muted">${esc(file.name)} · ${total} ${t("rows")} · ${t("preview")}</p>
      <div class="tablewrap"><table id="c-preview-table"><thead><tr><th>to</th><th>account</th>${keys.map((k) => `<th>${esc(k)}</th>`).join("")}</tr></thead>
      <tbody>${state.preview.map((r) => `<tr><td>${esc(r.to)}</td><td>${esc(r.account || "")}</td>${keys.map((k) => `<td>${esc(r.vars?.[k] ?? "")}</td>`).join("")}</tr>`).join("")}</tbody></table></div>`;
    check();
  }));
  $("#campaign-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
      const accounts = $$("#c-accounts input:checked").map((i) => i.value);
      if (!accounts.length) throw new Error(t("pick_account"));
      const spec = { name: $("#c-name").value, accounts, message: readMessage("c-"), priority: $("#c-priority").value };
      const sendAt = $("#c-send-at").value;
      if (sendAt) spec.send_at = new Date(sendAt).toISOString();
      if ($("#c-draft").checked) spec.draft = true;
      if (audienceMode()) {
        spec.audience = readAudience();
        $("#c-submit").disabled = true;
        try {
          const created = await api("POST", "/v1/campaigns", spec);
          notify(`${t("created_ok")}: ${created.id} (${created.total})`);
          location.hash = `#campaign/${encodeURIComponent(created.id)}`;
        } finally {
          $("#c-submit").disabled = false;
        }
        return;
      }
      const file = $("#c-file").files[0];
      if (!file) throw new Error(t("pick_file"));
      const form = new FormData();
      form.append("spec", JSON.stringify(spec));
      form.append("recipients", file, file.name);
      $("#c-submit").disabled = true;
      try {
        const created = await api("POST", "/v1/campaigns/upload", form);
        notify(`${t("created_ok")}: ${created.id} (${created.total})`);
        location.hash = `#campaign/${encodeURIComponent(created.id)}`;
      } finally {
        $("#c-submit").disabled = false;
      }
    });
  });
  return {
    poll: false,
    async refresh() {
      const { accounts } = await api("GET", "/v1/accounts");
      $("#c-accounts").innerHTML = accounts.length
        ? accounts.map((a) => `<label class="check"><input type="checkbox" name="account" value="${esc(a.id)}"> ${esc(a.id)} <span class="muted">(${esc(a.vendor)})</span> ${badge(a.status, "acc_")}</label>`).join("")
        : t("no_accounts");
    },
  };
}

// --- accounts -----------------------------------------------------------------------------------------------------

function accountsPage() {
  view().innerHTML = `<div class="row"><h1>${t("accounts")}</h1><span class="spacer"></span><span class="muted">${t("refresh_note")}</span></div>
    <div id="list"><p class="muted">${t("loading")}</p></div><div id="editor"></div>`;
  return {
    async refresh() {
      const { accounts } = await api("GET", "/v1/accounts");
      current.accounts = accounts;
      // the contact sync of each account whose vendor has contact calls (the others answer 409)
      const syncs = {};
      if (!token()) return; // logged out while the accounts were read: nothing more is asked
      await Promise.all(accounts.filter((a) => a.vendor === "gewe" || a.vendor === "ecloud").map(async (a) => {
        try { syncs[a.id] = await api("GET", `/v1/accounts/${encodeURIComponent(a.id)}/contacts/sync`); } catch (error) { if (!(error instanceof ApiError)) throw error; }
      }));
      if (!accounts.length) {
        $("#list").html = `<p class="muted">${t("no_accounts")}</p>`;
        return;
      }
      const rows = accounts.map((a) => `<tr data-account="${esc(a.id)}">
        <td data-label="${t("id")}"><b>${esc(a.id)}</b><div class="muted mono">${esc(a.instance)}</div></td>
        <td data-label="${t("vendor")}">${esc(a.vendor)}</td>
        <td data-label="${t("status")}" class="status">${badge(a.status, "acc_")}</td>
        <td data-label="${t("reason")}" class="wrap reason" title="${esc(a.status_reason || "")}">${esc(reasonText(a.status_reason))}</td>
        <td data-label="${t("per_minute")}" class="num">${a.limits.per_minute || "∞"}</td>
        <td data-label="${t("today")}" class="num today">${a.sent_today ?? 0} / ${a.limits.daily_cap || t("unlimited")}</td>
        <td data-label="${t("token_set")}">${a.token_set ? t("set") : t("not_set")}</td>
        <td data-label="${t("contacts")}" class="contacts">${contactsCell(syncs[a.id])}</td>
        <td data-label="${t("actions")}" class="actions">
          ${a.status === "active" ? `<button data-action="account" data-op="pause" data-id="${esc(a.id)}">${t("pause")}</button>`
            : `<button data-action="account" data-op="resume" data-id="${esc(a.id)}">${t("resume")}</button>`}
          <button data-action="edit-account" data-id="${esc(a.id)}">${t("edit")}</button>
          ${syncs[a.id] ? `<button data-action="sync-contacts" data-id="${esc(a.id)}">${t("sync_contacts")}</button>` : ""}</td></tr>`).join("");
      $("#list").html = `<div class="tablewrap"><table class="cards"><thead><tr><th>${t("id")}</th><th>${t("vendor")}</th>
        <th>${t("status")}</th><th>${t("reason")}</th><th class="num">${t("per_minute")}</th><th class="num">${t("today")} / ${t("daily_cap")}</th>
        <th>${t("token_set")}</th><th>${t("contacts")}</th><th>${t("actions")}</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    },
  };
}

actions.account = async (el) => {
  await api("POST", `/v1/accounts/${encodeURIComponent(el.dataset.id)}/${el.dataset.op}`);
  notify(`${el.dataset.id}: ${t(el.dataset.op)} ✓`);
  await current.refresh();
};

actions["edit-account"] = (el) => {
  const a = (current.accounts || []).find((x) => x.id === el.dataset.id);
  if (!a) return;
  const fields = ["per_minute", "daily_cap", "min_interval_s", "jitter_s"];
  $("#editor").innerHTML = `<form id="account-form" class="card" autocomplete="off"><h2>${t("edit_account")}: ${esc(a.id)}</h2>
    <div class="grid">${fields.map((f) => `<label>${t(f)}<input type="number" step="any" min="0" id="acc-${f}" value="${esc(a.limits[f])}"></label>`).join("")}
    <label>${t("new_token")}<input type="password" id="acc-token" autocomplete="new-password" spellcheck="false"></label></div>
    <p class="row"><button type="submit" class="primary">${t("save")}</button><button type="button" data-action="close-editor">${t("close")}</button></p></form>`;
  $("#account-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
      const limits = {};
      fields.forEach((f) => { limits[f] = Number($(`#acc-${f}`).value); });
      const body = { limits };
      const secret = $("#acc-token").value;
      if (secret) body.token = secret;
      await api("PATCH", `/v1/accounts/${encodeURIComponent(a.id)}`, body);
      $("#acc-token").value = "";
      notify(`${a.id}: ${t("saved")}`);
      await current.refresh();
    });
  });
  $("#account-form").scrollIntoView();
};
actions["close-editor"] = () => { $("#editor").innerHTML = ""; };

/** An account's contact sync in a cell: its status, progress while running, counts and how old. */
function contactsCell(sync) {
  if (!sync) return `<span class="muted">—</span>`;
  let html = `<span class="badge cs-${esc(sync.status)}">${esc(t(`cs_${sync.status}`))}</span>`;
  if (sync.status === "running") html += ` <span class="muted">${sync.progress.done}/${sync.progress.total}</span>`;
  if (sync.synced_at) html += `<div class="muted">${sync.friends} ${t("friends_n")} · ${sync.chatrooms} ${t("groups_n")} · ${fmtTime(sync.synced_at)}</div>`;
  if (sync.status === "failed" && sync.error) html += `<div class="check-bad wrap">${esc(sync.error)}</div>`;
  return html;
}

actions["sync-contacts"] = async (el) => {
  await api("POST", `/v1/accounts/${encodeURIComponent(el.dataset.id)}/contacts/sync`);
  notify(`${el.dataset.id}: ${t("sync_started")}`);
  await current.refresh();
};

// --- dead letters ---------------------------------------------------------------------------------------------

// worker/store/vocabulary.py DeadReason, in its order (tests/repo/test_layout.py keeps the two equal)
const DEAD_REASONS = ["permanent", "retries_exhausted", "unknown_outcome", "invalid_message", "account_missing", "sequence_stopped"];
// a dead letter's reason in the reader's words (a reason this page does not know stays as recorded)
const deadReasonText = (reason) => I18N[lang]["dr_" + reason] ?? reason;

function deadPage() {
  view().innerHTML = `<div class="row"><h1>${t("dead_letters")}</h1><span class="spacer"></span><span class="muted">${t("refresh_note")}</span></div>
    <form id="dead-filter" class="row card"><label>${t("account")}<input id="f-account"></label>
      <label>${t("campaign")}<input id="f-campaign"></label>
      <label>${t("reason")}<select id="f-reason"><option value="">${t("any_reason")}</option>${DEAD_REASONS.map((r) => `<option value="${r}">${esc(t("dr_" + r))}</option>`).join("")}</select></label>
      <button type="submit">${t("filter")}</button></form>
    <div id="list"><p class="muted">${t("loading")}</p></div><div id="detail"></div>`;
  $("#dead-filter").addEventListener("submit", (e) => { e.preventDefault(); run(() => current.refresh()); });
  return {
    async refresh() {
      const query = new URLSearchParams({ limit: 200 });
      for (const f of ["account", "campaign", "reason"]) if ($(`#f-${f}`).value.trim()) query.set(f, $(`#f-${f}`).value.trim());
      const { dead_letters: items, total } = await api("GET", `/v1/dead-letters?${query}`);
      if (!items.length) {
        $("#list").html = `<p class="muted">${t("no_dead")} (${total})</p>`;
        return;
      }
      const rows = items.map((d) => `<tr data-dead="${esc(d.id)}">
        <td data-label="${t("id")}" class="id"><button class="link" data-action="inspect" data-id="${esc(d.id)}">${esc(d.id)}</button></td>
        <td data-label="${t("account")}">${esc(d.account)}</td><td data-label="${t("to")}">${esc(d.to)}</td>
        <td data-label="${t("campaign")}" class="id">${esc(d.campaign || "")}</td>
        <td data-label="${t("reason")}"><span class="badge dead" title="${esc(d.reason)}">${esc(deadReasonText(d.reason))}</span></td>
        <td data-label="${t("error")}" class="wrap">${esc(d.error)}</td>
        <td data-label="${t("attempts")}" class="num">${d.attempts}</td>
        <td data-label="${t("dead_at")}">${esc(fmtTime(d.dead_at))}</td>
        <td data-label="${t("actions")}" class="actions"><button data-action="replay" data-id="${esc(d.id)}" data-reason="${esc(d.reason)}">${t("replay")}</button>
          <button class="danger" data-action="delete-dead" data-id="${esc(d.id)}">${t("delete")}</button></td></tr>`).join("");
      $("#list").html = `<p class="muted">${items.length} / ${total}</p><div class="tablewrap"><table class="cards"><thead><tr>
        <th>${t("id")}</th><th>${t("account")}</th><th>${t("to")}</th><th>${t("campaign")}</th><th>${t("reason")}</th>
        <th>${t("error")}</th><th class="num">${t("attempts")}</th><th>${t("dead_at")}</th><th>${t("actions")}</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    },
  };
}

actions.inspect = async (el) => {
  const entry = await api("GET", `/v1/dead-letters/${encodeURIComponent(el.dataset.id)}`);
  $("#detail").innerHTML = `<div class="card" id="dead-detail"><div class="row"><h2>${t("history")}: <span class="mono">${esc(entry.id)}</span></h2>
    <span class="spacer"></span><button data-action="close-detail">${t("close")}</button></div>
    <p><span title="${esc(entry.reason)}">${esc(deadReasonText(entry.reason))}</span> · ${esc(entry.error_class)} · ${esc(entry.error)}</p>
    <div class="tablewrap"><table><thead><tr><th>#</th><th>${t("h_event")}</th><th>${t("error")}</th><th>${t("h_at")}</th></tr></thead><tbody>
    ${entry.history.map((h, i) => `<tr><td>${i + 1}</td><td>${esc(h.event || h.outcome || "")}</td><td class="wrap">${esc(h.error || "")}</td>
      <td>${esc(fmtTime(h.at || h.started))}</td></tr>`).join("")}</tbody></table></div></div>`;
  $("#detail").scrollIntoView();
};
actions["close-detail"] = () => { $("#detail").innerHTML = ""; };

actions.replay = async (el) => {
  const path = `/v1/dead-letters/${encodeURIComponent(el.dataset.id)}/replay`;
  try {
    await api("POST", path);
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "unknown_outcome")) throw error;
    if (!confirm(t("confirm_force"))) return;
    await api("POST", `${path}?force=true`);
  }
  notify(`${el.dataset.id}: ${t("replayed")}`);
  await current.refresh();
};

actions["delete-dead"] = async (el) => {
  if (!confirm(t("confirm_delete"))) return;
  await api("DELETE", `/v1/dead-letters/${encodeURIComponent(el.dataset.id)}`);
  notify(`${el.dataset.id}: ${t("deleted")}`);
  await current.refresh();
};

// --- suppressions (issue 19) ---------------------------------------------------------------------------------------

const SUPP_REASONS = ["opted_out", "not_friend", "contact_removed", "manual"];

function suppressionsPage() {
  view().innerHTML = `<div class="row"><h1>${t("supp_title")}</h1><span class="spacer"></span><span class="muted">${t("refresh_note")}</span></div>
    <form id="supp-add" class="row card"><label>${t("to")}<input id="s-to" required maxlength="128"></label>
      <label>${t("account")}<input id="s-account" placeholder="${t("every_account")}"></label>
      <label>${t("note")}<input id="s-note" maxlength="500"></label>
      <button type="submit" class="primary">${t("add_supp")}</button></form>
    <form id="supp-filter" class="row card"><label>${t("account")}<input id="sf-account" placeholder="*"></label>
      <label>${t("reason")}<select id="sf-reason"><option value="">-</option>${SUPP_REASONS.map((r) => `<option value="${r}">${t("r_" + r)}</option>`).join("")}</select></label>
      <button type="submit">${t("filter")}</button></form>
    <div id="held"></div>
    <div id="list"><p class="muted">${t("loading")}</p></div>`;
  $("#supp-filter").addEventListener("submit", (e) => { e.preventDefault(); run(() => current.refresh()); });
  $("#supp-add").addEventListener("submit", (e) => {
    e.preventDefault();
    run(async () => {
      const account = $("#s-account").value.trim();
      await api("POST", "/v1/suppressions", { to: $("#s-to").value.trim(), account: account || null, reason: "manual", note: $("#s-note").value });
      notify(`${$("#s-to").value.trim()}: ${t("supp_added")}`);
      $("#s-to").value = "";
      await current.refresh();
    });
  });
  return {
    async refresh() {
      const query = new URLSearchParams({ limit: 500 });
      if ($("#sf-account").value.trim()) query.set("account", $("#sf-account").value.trim());
      if ($("#sf-reason").value) query.set("reason", $("#sf-reason").value);
      const { suppressions: items } = await api("GET", `/v1/suppressions?${query}`);
      await showHeld($("#sf-account").value.trim());
      if (!items.length) {
        $("#list").html = `<p class="muted">${t("no_supp")}</p>`;
        return;
      }
      const rows = items.map((s) => `<tr data-supp="${esc(s.to)}">
        <td data-label="${t("to")}" class="mono">${esc(s.to)}</td><td data-label="${t("account")}">${esc(s.account || "*")}</td>
        <td data-label="${t("reason")}"><span class="badge" title="${esc(s.reason)}">${esc(t("r_" + s.reason))}</span></td>
        <td data-label="${t("since")}">${esc(fmtTime(s.at))}</td><td data-label="${t("by")}" title="${esc(s.by)}">${esc(byText(s.by))}</td>
        <td data-label="${t("note")}" class="wrap">${esc(s.note)}</td>
        <td data-label="${t("actions")}" class="actions"><button class="danger" data-action="lift" data-account="${esc(s.account || "*")}" data-to="${esc(s.to)}">${t("lift")}</button></td></tr>`).join("");
      $("#list").html = `<p class="muted">${items.length}</p><div class="tablewrap"><table class="cards"><thead><tr>
        <th>${t("to")}</th><th>${t("account")}</th><th>${t("reason")}</th><th>${t("since")}</th><th>${t("by")}</th><th>${t("note")}</th>
        <th>${t("actions")}</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    },
  };
}

// who wrote a suppression: the system's own authors (worker/store/suppressions.py SYSTEM_BY, the bootstrap token)
// in words, a key by its name (as deadReasonText and skipText look theirs up)
const byText = (by) => I18N[lang]["by_" + by] ?? by;

// an account's callback changes held past the hourly cap (shown when the list is filtered to that account)
async function showHeld(account) {
  if (!account || account === "*") {
    $("#held").html = "";
    return;
  }
  const page = await api("GET", `/v1/accounts/${encodeURIComponent(account)}/callback/held?limit=100`).catch(() => null);
  if (!page || !page.total) {
    $("#held").html = "";
    return;
  }
  const rows = page.held.map((h) => `<tr data-held="${esc(h.id)}"><td data-label="${t("held_from")}" class="mono">${esc(h.from)}</td>
    <td data-label="${t("reason")}"><span class="badge" title="${esc(h.reason)}">${esc(t("r_" + h.reason))}</span></td>
    <td data-label="${t("held_received")}">${esc(fmtTime(h.at))}</td></tr>`).join("");
  $("#held").html = `<div class="card held"><h2>${t("held_title")} <span class="badge">${page.total}</span></h2>
    <p class="muted">${t("held_hint")}</p><div class="tablewrap"><table class="cards"><thead><tr><th>${t("held_from")}</th>
    <th>${t("reason")}</th><th>${t("held_received")}</th></tr></thead><tbody>${rows}</tbody></table></div>
    <button class="primary" data-action="held-apply" data-account="${esc(account)}">${t("held_apply")}</button></div>`;
}

actions["held-apply"] = async (el) => {
  if (!confirm(t("confirm_held"))) return;
  const done = await api("POST", `/v1/accounts/${encodeURIComponent(el.dataset.account)}/callback/held/apply`, {});
  notify(`${t("held_applied")}: ${done.applied}`);
  await current.refresh();
};

actions.lift = async (el) => {
  if (!confirm(t("confirm_lift"))) return;
  await api("DELETE", `/v1/suppressions/${encodeURIComponent(el.dataset.account)}/${encodeURIComponent(el.dataset.to)}`);
  notify(`${el.dataset.to}: ${t("lifted")}`);
  await current.refresh();
};

// --- schedules ----------------------------------------------------------------------------------------------------

function schedulesPage() {
  view().innerHTML = `<h1>${t("schedules")}</h1><div id="list"><p class="muted">${t("loading")}</p></div>
    <form id="schedule-form" class="card" autocomplete="off"><h2>${t("new_schedule")}</h2>
      <div class="grid"><label>${t("name")}<input id="s-name" maxlength="200"></label>
      <label>${t("cron")} <span class="hint">${t("cron_hint")}</span><input id="s-cron" required value="0 9 * * 1-5"></label>
      <label>${t("timezone")}<input id="s-tz" value="Asia/Shanghai"></label>
      <label>${t("account")}<input id="s-account" required></label><label>${t("to")}<input id="s-to" required></label></div>
      ${messageForm("s-")}
      <p><button type="submit" class="primary">${t("create")}</button></p></form>`;
  bindKind("s-", () => {});
  $("#schedule-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
      const spec = {
        name: $("#s-name").value, cron: $("#s-cron").value.trim(), timezone: $("#s-tz").value.trim(),
        message: { account: $("#s-account").value.trim(), to: $("#s-to").value.trim(), message: readMessage("s-") },
      };
      const created = await api("POST", "/v1/schedules", spec);
      notify(`${t("schedule_created")}: ${created.id}`);
      await current.refresh();
    });
  });
  return {
    async refresh() {
      const { schedules } = await api("GET", "/v1/schedules");
      if (!schedules.length) {
        $("#list").html = `<p class="muted">${t("no_schedules")}</p>`;
        return;
      }
      const rows = schedules.map((s) => `<tr data-schedule="${esc(s.id)}">
        <td data-label="${t("name")}">${esc(s.name)}<div class="mono muted">${esc(s.id)}</div></td>
        <td data-label="${t("kind")}">${t("schedule_kind_" + s.kind)}</td>
        <td data-label="${t("cron")}" class="mono">${esc(s.cron)}</td><td data-label="${t("timezone")}">${esc(s.timezone)}</td>
        <td data-label="${t("next_firings")}" class="muted">${(s.next_firings || []).map((x) => esc(fmtTime(x, s.timezone))).join("<br>")}</td>
        <td data-label="${t("fires")}" class="num">${s.fires}</td>
        <td data-label="${t("last_result")}" class="wrap mono">${esc(s.last_error || s.last_result || "")}</td>
        <td data-label="${t("status")}" class="status">${s.paused ? badge("paused") : badge("active", "acc_")}</td>
        <td data-label="${t("actions")}" class="actions">${s.paused
          ? `<button data-action="schedule" data-op="resume" data-id="${esc(s.id)}">${t("resume")}</button>`
          : `<button data-action="schedule" data-op="pause" data-id="${esc(s.id)}">${t("pause")}</button>`}
          <button class="danger" data-action="delete-schedule" data-id="${esc(s.id)}">${t("delete")}</button></td></tr>`).join("");
      $("#list").html = `<div class="tablewrap"><table class="cards"><thead><tr><th>${t("name")}</th><th>${t("kind")}</th>
        <th>${t("cron")}</th><th>${t("timezone")}</th><th>${t("next_firings")}</th><th class="num">${t("fires")}</th>
        <th>${t("last_result")}</th><th>${t("status")}</th><th>${t("actions")}</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    },
  };
}

actions.schedule = async (el) => {
  await api("POST", `/v1/schedules/${encodeURIComponent(el.dataset.id)}/${el.dataset.op}`);
  notify(`${el.dataset.id}: ${t(el.dataset.op)} ✓`);
  await current.refresh();
};

actions["delete-schedule"] = async (el) => {
  if (!confirm(t("confirm_delete_schedule"))) return;
  await api("DELETE", `/v1/schedules/${encodeURIComponent(el.dataset.id)}`);
  notify(`${el.dataset.id}: ${t("deleted")}`);
  await current.refresh();
};

// --- pictures: our own SVG, drawn from the API's per-minute counts (no library, no CDN) -------------------------

function niceMax(value) {
  // the chart's top: an even step times a power of ten, at least the largest value
  if (value <= 2) return 2; // counts: the middle line stays a whole number
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 4, 6, 8, 10].map((m) => m * power).find((v) => v >= value); // halves stay whole numbers
}

function hhmm(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
}

// the x-axis labels fall on round times (every 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6 h): at most 7 over the span
function tickMinutes(span) {
  return [1, 2, 5, 10, 15, 30, 60, 120, 180, 360].find((m) => span / m <= 7) || 720;
}

function localMinute(epoch) {
  const d = new Date(epoch * 1000);
  return d.getHours() * 60 + d.getMinutes();
}

// stacked bars, one per minute: `series` is [[field, css class], ...] of the minutes' counts
function chartSvg(minutes, series, id) {
  if (!minutes.length || !minutes.some((m) => series.some(([k]) => m[k]))) return `<p class="muted" id="${id}">${t("no_data")}</p>`;
  const W = 1100, H = 220, L = 44, R = 10, T = 10, B = 24;
  const top = niceMax(Math.max(...minutes.map((m) => series.reduce((sum, [k]) => sum + (m[k] || 0), 0))));
  const step = (W - L - R) / minutes.length;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const grid = [0, 0.5, 1].map((f) => `<line class="grid" x1="${L}" x2="${W - R}" y1="${y(top * f)}" y2="${y(top * f)}"/>
    <text class="axis" x="${L - 6}" y="${y(top * f) + 4}" text-anchor="end">${+(top * f).toFixed(1)}</text>`).join("");
  const every = tickMinutes(minutes.length);
  const labels = minutes.map((m, i) => (localMinute(m.at) % every ? "" : `<text class="axis tick" x="${L + i * step + step / 2}" y="${H - 6}" text-anchor="middle">${hhmm(m.at)}</text>`)).join("");
  const bars = minutes.map((m, i) => {
    let base = 0;
    return series.map(([k, cls]) => {
      const v = m[k] || 0;
      if (!v) return "";
      const width = Math.min(36, Math.max(1, step * 0.8)); // a few minutes: narrow bars, not slabs
      const rect = `<rect class="${cls}" x="${(L + i * step + (step - width) / 2).toFixed(1)}" y="${y(base + v).toFixed(1)}" width="${width.toFixed(1)}" height="${(y(base) - y(base + v)).toFixed(1)}"><title>${hhmm(m.at)} ${t(k)}: ${v}</title></rect>`;
      base += v;
      return rect;
    }).join("");
  }).join("");
  const totals = series.map(([k, cls]) => `<span class="legend"><i class="${cls}"></i>${t(k)} ${minutes.reduce((sum, m) => sum + (m[k] || 0), 0)}</span>`).join("");
  // the axis's times are this browser's: say in which offset
  const zone = `<span class="muted chart-tz">${t("axis_tz").replace("{tz}", timeParts(minutes[minutes.length - 1].at).offset)}</span>`;
  return `<svg class="chart" id="${id}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(t("per_min_chart"))}">${grid}${labels}${bars}</svg><div class="row">${totals}${zone}</div>`;
}

function auditTable(items) {
  if (!items.length) return `<p class="muted">${t("no_audit")}</p>`;
  const rows = items.map((e) => `<tr class="audit-entry">
    <td data-label="${t("at")}">${esc(fmtTime(e.at))}</td><td data-label="${t("key")}" class="audit-key"><b>${esc(e.key)}</b></td>
    <td data-label="${t("role")}" class="audit-role">${esc(roleLabel(e.role))}</td>
    <td data-label="${t("action")}" class="audit-action" title="${esc(e.action)}">${actionLabel(e.action) === e.action ? `<span class="mono">${esc(e.action)}</span>`
      : `<span class="audit-label">${esc(actionLabel(e.action))}</span><div class="mono muted audit-code">${esc(e.action)}</div>`}</td>
    <td data-label="${t("target")}" class="mono">${esc(e.target)}</td>
    <td data-label="${t("result")}" class="num"><span class="badge ${e.status < 400 ? "sent" : "dead"}">${e.status}</span></td></tr>`).join("");
  return `<div class="tablewrap"><table class="cards"><thead><tr><th>${t("at")}</th><th>${t("key")}</th><th>${t("role")}</th>
    <th>${t("action")}</th><th>${t("target")}</th><th class="num">${t("result")}</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

const FLEET_HOURS = 3;

function overviewPage() {
  view().innerHTML = `<div class="row"><h1>${t("overview")}</h1><span class="spacer"></span><span class="muted">${t("refresh_note")}</span></div>
    <h2>${esc(t("fleet_sends").replace("{h}", FLEET_HOURS))}</h2><div id="fleet-chart" class="card chartbox">${t("loading")}</div>
    <div class="row"><h2>${esc(t("fleet_dead").replace("{h}", FLEET_HOURS))}</h2><span class="spacer"></span>
      <a href="#dead" class="stat"><b id="dead-waiting">–</b><span>${t("dead_waiting")}</span></a></div>
    <div id="dead-chart" class="card chartbox"></div>
    <h2>${t("health")}</h2><div id="health" class="health"></div>`;
  return {
    async refresh() {
      const fleet = await api("GET", `/v1/stats/fleet?hours=${FLEET_HOURS}`);
      $("#fleet-chart").html = chartSvg(fleet.minutes, [["sent", "c-sent"], ["retried", "c-retried"]], "fleet-sends");
      $("#dead-chart").html = chartSvg(fleet.minutes, [["dead", "c-dead"]], "fleet-dead");
      $("#dead-waiting").textContent = fleet.dead_letters;
      $("#health").html = fleet.accounts.length ? fleet.accounts.map((a) => {
        const cap = a.daily_cap || 0;
        const share = cap ? Math.min(1, a.sent_today / cap) : 0;
        const errors = a.last_errors.length ? `<ul class="errors">${a.last_errors.map((e) => `<li title="${esc(e.error)}"><span class="muted">${esc(fmtTime(e.at))}</span> ${esc(e.error_class)}: ${esc(e.error)}</li>`).join("")}</ul>` : `<p class="muted">${t("last_errors")}: ${t("none")}</p>`;
        return `<div class="card account-health" data-account="${esc(a.id)}"><div class="row"><b>${esc(a.id)}</b>${badge(a.status, "acc_")}<span class="spacer"></span><span class="muted">${esc(a.vendor)}</span></div>
          ${a.reason ? `<div class="reason wrap">${esc(reasonText(a.reason))}</div>` : ""}
          <svg class="capbar" viewBox="0 0 200 10" role="img" aria-label="${t("today")}"><rect class="cap-bg" x="0" y="0" width="200" height="10"/><rect class="${share >= 1 ? "c-dead" : "c-sent"}" x="0" y="0" width="${(200 * share).toFixed(1)}" height="10"/></svg>
          <div class="muted today">${t("today")}: ${a.sent_today} / ${cap || t("unlimited")}</div>${errors}</div>`;
      }).join("") : `<p class="muted">${t("no_accounts")}</p>`;
    },
  };
}

function auditPage() {
  const state = { cursors: [null], page: 0, key: "", target: "" };
  view().innerHTML = `<div class="row"><h1>${t("audit")}</h1></div><p class="muted">${t("audit_hint")}</p>
    <form id="audit-filter" class="row card"><label>${t("key")}<input id="a-key" spellcheck="false"></label>
      <label>${t("target")}<input id="a-target" placeholder="campaign:…" spellcheck="false"></label>
      <button type="submit">${t("filter")}</button></form>
    <div id="audit-list" class="muted">${t("loading")}</div>
    <div class="row pager"><button data-action="audit-page" data-dir="-1">${t("prev")}</button>
    <button data-action="audit-page" data-dir="1">${t("older")}</button><span id="audit-page-no" class="muted"></span></div>`;
  $("#audit-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(state, { key: $("#a-key").value.trim(), target: $("#a-target").value.trim(), cursors: [null], page: 0 });
    run(() => current.refresh());
  });
  actions["audit-page"] = async (el) => {
    const next = state.page + Number(el.dataset.dir);
    if (next < 0 || state.cursors[next] === undefined || (next > 0 && state.cursors[next] === null)) return;
    state.page = next;
    await current.refresh();
  };
  return {
    async refresh() {
      const query = new URLSearchParams({ limit: 50 });
      if (state.cursors[state.page]) query.set("cursor", state.cursors[state.page]);
      if (state.key) query.set("key", state.key);
      if (state.target) query.set("target", state.target);
      const page = await api("GET", `/v1/audit?${query}`);
      state.cursors[state.page + 1] = page.next_cursor;
      $("#audit-page-no").textContent = `#${state.page + 1}`;
      $("#audit-list").className = "";
      $("#audit-list").html = auditTable(page.items);
    },
  };
}
