// Command-line parsing shared by the two programs: "--name value" options and positional arguments.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <srexport/sidecar.hpp>

struct Args {
    std::map<std::string, std::string> options;
    std::set<std::string> flags;
    std::vector<std::string> positional;

    // `valued`: options that take a value; `switches`: options that do not.
    Args(int argc, char** argv, const std::set<std::string>& valued, const std::set<std::string>& switches, int first = 1) {
        for (int i = first; i < argc; ++i) {
            const std::string a = argv[i];
            if (a.rfind("--", 0) != 0) { positional.push_back(a); continue; }
            if (switches.count(a)) { flags.insert(a); continue; }
            if (!valued.count(a)) throw srexport::Error(a + ": unknown option");
            if (i + 1 >= argc) throw srexport::Error(a + ": needs a value");
            options[a] = argv[++i];
        }
    }
    bool has(const std::string& k) const { return options.count(k) > 0; }
    std::string get(const std::string& k, const std::string& fallback = "") const {
        auto it = options.find(k);
        return it == options.end() ? fallback : it->second;
    }
    int integer(const std::string& k, int fallback) const {
        if (!has(k)) return fallback;
        try {
            size_t used = 0;
            const int v = std::stoi(get(k), &used);
            if (used != get(k).size()) throw std::invalid_argument("trailing");
            return v;
        } catch (const std::exception&) {
            throw srexport::Error(k + ": expected an integer, got \"" + get(k) + "\"");
        }
    }
};
