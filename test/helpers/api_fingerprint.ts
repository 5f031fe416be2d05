// A "fingerprint" of what one of the compile-check headers (test/native/compile_check/include) declares: a C++
// program that takes the address of every declared function as a pointer to exactly the declared signature (which
// compiles only where the header in use declares that signature), and prints every enumerator's value, every enum's
// size, every struct's size and field offsets and types, and every numeric #define. Compiled once against the
// compile-check header and once against the library's real header, the two outputs must agree wherever the real
// header declares the same name: that is how the declarations are checked against NVIDIA's. Version macros are left
// out (they differ by design).
import * as fs from 'fs';

export interface ApiFunction {
  name: string;
  ret: string;     // return type, attributes and calling-convention macros removed
  params: string;  // the parameter list as declared
}

export interface ApiItems {
  functions: ApiFunction[];
  enumerators: string[];
  enums: string[];
  structs: { name: string; fields: string[] }[];
  defines: string[];
}

function stripComments(s: string): string {
  return s.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/[^\n]*/g, ' ');
}

/** The names a compile-check header declares (its own simple, uniform layout is what this parses). */
export function parseHeader(file: string): ApiItems {
  const src = stripComments(fs.readFileSync(file, 'utf8'));
  // Function declarations: the statements (preprocessor lines, braces and 'extern "C"' aside) of the form
  // "<ret> name(<params>)".
  const code = src.replace(/^[ \t]*#(?:[^\n]*\\\n)*[^\n]*$/gm, ' ').replace(/extern\s+"C"/g, ' ');
  const functions: ApiFunction[] = [];
  for (const stmt of code.split(/[;{}]/)) {
    const m = /^\s*([\w\s*]+?)\s*\b(\w+)\s*\(([^()]*)\)\s*$/.exec(stmt);
    if (!m || /\btypedef\b/.test(m[1])) continue;
    const ret = m[1].replace(/\b(CUDNN_DEPRECATED|CUBLASAPI|CUDNNWINAPI|CUBLASWINAPI|static|inline)\b/g, ' ')
      .replace(/\s+/g, ' ').trim();
    functions.push({ name: m[2], ret, params: m[3].replace(/\s+/g, ' ').trim() });
  }
  const enumerators: string[] = [];
  const enums: string[] = [];
  for (const m of src.matchAll(/typedef\s+enum\s*\{([\s\S]*?)\}\s*(\w+)/g)) {
    enums.push(m[2]);
    for (const e of m[1].matchAll(/(\w+)\s*(?:CUDNN_DEPRECATED_ENUM\s*)?=/g)) enumerators.push(e[1]);
  }
  const structs: { name: string; fields: string[] }[] = [];
  for (const m of src.matchAll(/typedef\s+struct\s*\w*\s*\{([\s\S]*?)\}\s*(\w+)/g)) {
    const fields = [...m[1].matchAll(/(\w+)\s*(?:\[[^\]]*\])?\s*;/g)].map((f) => f[1]);
    structs.push({ name: m[2], fields });
  }
  const defines: string[] = [];
  for (const m of src.matchAll(/^\s*#\s*define\s+(\w+)\s+(-?\d+)\s*$/gm)) {
    if (!/MAJOR|MINOR|PATCH|VERSION|SUFFIX/.test(m[1])) defines.push(m[1]);
  }
  return { functions, enumerators, enums, structs, defines };
}

/** The C++ program printing the fingerprint of `items` (one "kind name value" line each), including `header`;
 *  `version` names the header's MAJOR and MINOR macros, printed as "version - M.m" where defined. */
export function fingerprintSource(header: string, items: ApiItems, skip: Set<string> = new Set(),
  version: [string, string] = ['', '']): string {
  const lines: string[] = [
    `#include <${header}>`,
    '#include <cstddef>',
    '#include <cstdio>',
    '#include <typeinfo>',
    'int main() {',
  ];
  if (version[0]) {
    lines.push(`#if defined(${version[0]}) && defined(${version[1]})`,
      `  std::printf("version - %d.%d\\n", int(${version[0]}), int(${version[1]}));`, '#endif');
  }
  items.functions.forEach((f, i) => {
    // The static_cast picks the declared overload and fails to compile where no function of that signature exists.
    if (!skip.has(f.name)) {
      lines.push(`  std::printf("function ${f.name}#${i} %s\\n", typeid(static_cast<${f.ret} (*)(${f.params})>(&${f.name})).name());`);
    }
  });
  for (const e of items.enums) {
    if (!skip.has(e)) lines.push(`  std::printf("enum-size ${e} %zu\\n", sizeof(${e}));`);
  }
  for (const e of items.enumerators) {
    if (!skip.has(e)) lines.push(`  std::printf("enumerator ${e} %lld\\n", (long long)(${e}));`);
  }
  for (const s of items.structs) {
    if (skip.has(s.name)) continue;
    lines.push(`  std::printf("struct ${s.name} %zu %s\\n", sizeof(${s.name}), typeid(${s.name}).name());`);
    for (const f of s.fields) {
      if (!skip.has(`${s.name}.${f}`)) {
        lines.push(`  std::printf("field ${s.name}.${f} %zu %s\\n", offsetof(${s.name}, ${f}), typeid(((${s.name}*)0)->${f}).name());`);
      }
    }
  }
  for (const d of items.defines) {
    if (!skip.has(d)) lines.push(`  std::printf("define ${d} %lld\\n", (long long)(${d}));`);
  }
  lines.push('  return 0;', '}', '');
  return lines.join('\n');
}

/** Names a failed compile reports as undeclared (or as having no such member), from g++'s diagnostics. */
export function undeclaredNames(stderr: string): string[] {
  const names = new Set<string>();
  for (const m of stderr.matchAll(/[‘'](\w+)[’'] was not declared in this scope/g)) names.add(m[1]);
  for (const m of stderr.matchAll(/[‘'](\w+)[’'](?: \{aka [^}]*\})? has no member named [‘'](\w+)[’']/g)) {
    names.add(`${m[1]}.${m[2]}`);
  }
  for (const m of stderr.matchAll(/[‘'](\w+)[’'] does not name a type/g)) names.add(m[1]);
  return [...names];
}
