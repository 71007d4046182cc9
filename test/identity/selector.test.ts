import { describe, expect, it } from 'vitest';
import {
  parseSelector,
  SelectorError,
  SUPPORTED_SELECTOR_FORMS,
} from '../../src/identity/selector';

const digest = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

describe('parseSelector', () => {
  it.each([
    ['unix:uid:1000', 'unix', 'uid:1000'],
    ['unix:uid:0', 'unix', 'uid:0'],
    ['unix:uid:4294967294', 'unix', 'uid:4294967294'],
    ['unix:gid:1000', 'unix', 'gid:1000'],
    ['unix:user:www-data', 'unix', 'user:www-data'],
    ['unix:user:svc.web_1$', 'unix', 'user:svc.web_1$'],
    ['unix:group:docker', 'unix', 'group:docker'],
    ['unix:supplementary_gid:27', 'unix', 'supplementary_gid:27'],
    ['unix:supplementary_group:sudo', 'unix', 'supplementary_group:sudo'],
    ['unix:path:/usr/bin/curl', 'unix', 'path:/usr/bin/curl'],
    ['unix:path:/opt/my app/bin:x', 'unix', 'path:/opt/my app/bin:x'],
    ['unix:path:/tmp/.hidden/...', 'unix', 'path:/tmp/.hidden/...'],
    [`unix:sha256:${digest}`, 'unix', `sha256:${digest}`],
    ['cgroup:path:/sigil-demo/web', 'cgroup', 'path:/sigil-demo/web'],
    ['cgroup:path:/', 'cgroup', 'path:/'],
    ['cgroup:path:/system.slice/a:b.service', 'cgroup', 'path:/system.slice/a:b.service'],
  ])('accepts %s', (text, type, value) => {
    const selector = parseSelector(text);
    expect(selector.type).toBe(type);
    expect(selector.value).toBe(value);
    expect(selector.text).toBe(text);
  });

  it.each([
    ['uid1000', "no type (no ':')", 'expected <type>:<value>'],
    ['', "no type (no ':')", 'expected <type>:<value>'],
    ['k8s:ns:default', "unsupported selector type 'k8s'", 'supported types are unix and cgroup'],
    [':uid:1', "unsupported selector type ''", 'supported types are unix and cgroup'],
    ['Unix:uid:1000', "unsupported selector type 'Unix'", 'supported types are unix and cgroup'],
    ['unix:pid:1', "unsupported unix selector 'pid'", 'unix:uid:<value>'],
    ['unix:UID:1', "unsupported unix selector 'UID'", 'unix:supplementary_group:<value>'],
    ['cgroup:id:5', "unsupported cgroup selector 'id'", 'supported are cgroup:path:<value>'],
    ['unix:uid', 'has no value', 'expected unix:uid:<uid>'],
    ['unix:uid:', "'' is not a decimal number", 'e.g. unix:uid:1000'],
    ['unix:uid:root', "'root' is not a decimal number", 'e.g. unix:uid:1000'],
    ['unix:uid:01000', "'01000' is not a decimal number", 'e.g. unix:uid:1000'],
    ['unix:uid:-1', "'-1' is not a decimal number", 'e.g. unix:uid:1000'],
    ['unix:uid:+5', "'+5' is not a decimal number", 'e.g. unix:uid:1000'],
    ['unix:uid:1.5', "'1.5' is not a decimal number", 'e.g. unix:uid:1000'],
    ['unix:uid:4294967295', 'larger than the maximum id 4294967294', 'unix:uid:<uid>'],
    ['unix:gid:99999999999', 'larger than the maximum id', 'unix:gid:<gid>'],
    ['unix:supplementary_gid:x', "'x' is not a decimal number", 'unix:supplementary_gid:<gid>'],
    ['unix:user:', 'the name is empty', 'unix:user:<user name>'],
    ['unix:user:a b', "contains ':', white space", 'unix:user:<user name>'],
    ['unix:group:a:b', "contains ':', white space", 'unix:group:<group name>'],
    ['unix:supplementary_group:\tx', 'control character', 'unix:supplementary_group:<group'],
    ['unix:path:usr/bin/curl', 'is not absolute', 'unix:path:<absolute executable path>'],
    ['unix:path:', 'is not absolute', 'unix:path:<absolute executable path>'],
    ['unix:path:/', "'/' names no file", 'unix:path:<absolute executable path>'],
    ['unix:path:/usr/bin/', "ends with '/'", 'unix:path:<absolute executable path>'],
    ['unix:path:/usr//bin/curl', 'empty segment', 'unix:path:<absolute executable path>'],
    ['unix:path:/usr/bin/../bin/curl', "'.' or '..' segment", 'unix:path:<absolute'],
    ['unix:path:/usr/./bin/curl', "'.' or '..' segment", 'unix:path:<absolute'],
    ['unix:path:/usr/bin/cu\0rl', 'NUL character', 'unix:path:<absolute'],
    [`unix:sha256:${digest.toUpperCase()}`, 'lowercase hex', 'unix:sha256:<64 lowercase hex'],
    [`unix:sha256:${digest.slice(1)}`, 'has 63 characters', 'unix:sha256:<64 lowercase hex'],
    [`unix:sha256:${digest.slice(1)}g`, 'has 64 characters', 'unix:sha256:<64 lowercase hex'],
    ['cgroup:path:sigil-demo/web', 'is not absolute', 'cgroup:path:/sigil-demo/web'],
    ['cgroup:path:/sigil-demo/web/', "ends with '/'", 'cgroup:path:<cgroup v2 path'],
    ['cgroup:path:/a/../b', "'.' or '..' segment", 'cgroup:path:<cgroup v2 path'],
    ['cgroup:path:/pods/web\uFFFD', 'contains U+FFFD', 'rename the file, cgroup or account'],
    ['unix:path:/opt/\uFFFD/run', 'contains U+FFFD', 'select the process by other selectors'],
    ['unix:user:w\uFFFDb', 'contains U+FFFD', 'valid UTF-8'],
  ])('rejects %j', (text, problemPart, hintPart) => {
    let caught: unknown;
    try {
      parseSelector(text);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SelectorError);
    const error = caught as SelectorError;
    expect(error.selector).toBe(text);
    expect(error.problem).toContain(problemPart);
    expect(error.hint).toContain(hintPart);
    expect(error.message).toContain(`invalid selector ${JSON.stringify(text)}`);
  });

  it('lists one form per supported kind', () => {
    expect(SUPPORTED_SELECTOR_FORMS).toHaveLength(9);
    for (const form of SUPPORTED_SELECTOR_FORMS) {
      const example = form.match(/e\.g\. (\S+)$/)?.[1];
      if (example !== undefined) {
        expect(parseSelector(example).text).toBe(example);
      }
    }
  });
});
